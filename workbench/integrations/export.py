"""A stored run as a TRL project: the same GRPO, with TRL's GRPOTrainer as the engine at cluster scale.

`export_trl(workspace, run_id, out)` writes, for `trl grpo --config grpo.yaml` (TRL 1.16):

    grpo.yaml         every setting of the run in TRL's names (GRPOConfig, ModelConfig, the script's dataset args)
    rewards.py        the reward source the run scored with last, unchanged (reward_funcs: rewards.<function>)
    train.jsonl       the task's training prompts with all their columns, in the order the run drew them
    eval.jsonl        the held-out prompts (an eval file, or the run's eval_split), when there are any
    launch.sh         one GPU; several with accelerate (DDP, DeepSpeed ZeRO-2, FSDP); several nodes
    requirements.txt  trl, transformers, peft, torch, accelerate, datasets, each pinned (==) to this environment's
    PARITY.md         each setting: mapped exactly, set where TRL's default differs, close, or not mapped
    model/            the built-in tiny model, when the run trained it: grpo.yaml loads ./model, so the project
                      trains on any machine (a hub id is kept as it is; a local folder is named, with a warning)

The batch. A workbench step samples P x G completions and makes one optimizer step on them (num_iterations
of them). In TRL that is per_device_train_batch_size x gradient_accumulation_steps x processes = P x G, with
steps_per_generation = gradient_accumulation_steps, so each optimizer step samples its own batch; every loss
type then normalises the gradient as the workbench does (workbench/engine/grpo.py, choice 5). launch.sh keeps the
product when the number of GPUs changes.

What GRPOTrainer cannot do (another advantage estimator, dynamic sampling) is still exported, as GRPO, with
the field named in a warning, at the top of grpo.yaml and of PARITY.md: the project then trains a different
algorithm from the run's, and says so.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from workbench.config import Config
from workbench.integrations.trl_settings import (
    CLOSE,
    EXACT,
    MATCHED,
    NOT_MAPPED,
    TRL_DEFAULTS,
    TRL_VERSION,
    Setting,
    close_notes,
    trl_settings,
    unsupported,
)
from workbench.rewards.scoring import RewardSource, Scorer
from workbench.rewards.tasks import load_task
from workbench.store.database import Store, StoreError, stored_prompt

# The versions the export's end-to-end test trained with (tests/test_export.py): the pin of a package that the
# exporting environment lacks (an app installed without the dev extras has no trl, accelerate or datasets).
TESTED_WITH = {
    "trl": TRL_VERSION,
    "transformers": "5.25.0",
    "peft": "0.21.2",
    "torch": "2.13.0",
    "accelerate": "1.16.0",
    "datasets": "5.2.0",
}
PINNED = tuple(TESTED_WITH)
FILES = ("grpo.yaml", "rewards.py", "train.jsonl", "eval.jsonl", "launch.sh", "requirements.txt", "PARITY.md")
MODEL_FOLDER = "model"  # the tiny model's copy in the project


class ExportError(ValueError):
    """The export cannot be written as asked; the message names the folder or the run."""


@dataclass(frozen=True)
class Exported:
    folder: Path
    warnings: list[str] = field(default_factory=list)  # what the project does not reproduce: algorithm, prompts


def export_trl(workspace: str | Path, run_id: str, out: str | Path, force: bool = False) -> Exported:
    """Write run `run_id` of the workspace's store as a TRL project in the folder `out` (see the module docstring).

    `out` must be new or empty; with `force` the export's own files in it are replaced, others are kept.
    """
    store = Store(workspace, create=False)
    run = store.run(run_id)
    if run is None:
        newest = ", ".join(store.runs().run_id.head(5)) or "none"
        raise StoreError(f"no run {run_id!r} in workspace {workspace} (its newest runs: {newest})")
    out = _out_folder(out, force)
    config = Config.from_dict(run["config"])
    task = load_task(run["task_path"]).split(config.eval_split)
    rows = task.batch(1, len(task.rows), config.seed)  # the first epoch, in the order the run drew it
    source, versions = run_reward(store, run)
    with Scorer(source, task.columns, config, task.folder) as scorer:  # the reward code runs in the worker, never here
        names, declared = list(scorer.lines), scorer.models.declared  # its functions; its reward models and judge
    reward_models = tuple(model_path(name) for name in declared.reward_models)
    settings = trl_settings(config, model_path(config.model), names, run_id, reward_models)
    problems, changed = unsupported(config), _prompts_changed(store, run_id, rows, config) + _local_model(config)
    changed += _model_rewards(declared)
    notes = close_notes(config, len(rows), versions) + changed

    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.jsonl").unlink(missing_ok=True)  # a forced export over an older one keeps no stale file
    shutil.rmtree(out / MODEL_FOLDER, ignore_errors=True)
    if _is_tiny(config.model):
        shutil.copytree(_tiny_path(), out / MODEL_FOLDER)
    (out / "grpo.yaml").write_text(grpo_yaml(settings, run_id, problems))
    (out / "rewards.py").write_text(source.text)
    _write_jsonl(out / "train.jsonl", rows)
    if task.eval_rows:
        _write_jsonl(out / "eval.jsonl", task.eval_rows)
    launch = out / "launch.sh"
    launch.write_text(launch_script(config, run_id))
    launch.chmod(0o755)
    (out / "requirements.txt").write_text(requirements())
    header = dict(run_id=run_id, task=run["task"], model=config.model, train=len(rows), held_out=len(task.eval_rows))
    (out / "PARITY.md").write_text(parity_markdown(config, settings, header, problems, notes))
    return Exported(out, problems + changed)


def export_trl_zip(workspace: str | Path, run_id: str) -> tuple[Path, list[str]]:
    """The run's TRL project as `<run_id>-trl.zip` (one folder inside) in a new temporary folder, and the
    export's warnings: what the app's Runs tab hands out for download."""
    parent = Path(tempfile.mkdtemp(prefix="workbench-export-"))
    exported = export_trl(workspace, run_id, parent / f"{run_id}-trl")
    archive = shutil.make_archive(str(exported.folder), "zip", parent, exported.folder.name)
    shutil.rmtree(exported.folder)  # the zip is what is handed out
    return Path(archive), exported.warnings


def run_reward(store: Store, run: dict) -> tuple[RewardSource, int]:
    """The reward source that scored the run's last stored step (a run's reward may be swapped mid-run), and
    how many versions scored it; the source it started with when no step is stored."""
    versions = store.query(
        """SELECT v.source, max(r.step) AS last_step
           FROM rollouts r JOIN reward_versions v ON v.version = r.reward_version
           WHERE r.run_id = $1 GROUP BY v.version, v.source ORDER BY last_step""",
        [run["run_id"]],
    )
    if versions.empty:
        return RewardSource(run["reward_source"], "rewards.py"), 1
    return RewardSource(versions.source.iloc[-1], "rewards.py"), len(versions)


def model_path(model: str) -> str:
    """What grpo.yaml loads: the tiny model's copy in the project (./model, launch.sh runs in the project's
    folder), another local folder as an absolute path, or the hub id as it is."""
    if _is_tiny(model):
        return f"./{MODEL_FOLDER}"
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def _tiny_path() -> Path:
    from workbench.engine.tiny import tiny_model_path  # torch and transformers load only for a local model

    return tiny_model_path()


def _is_tiny(model: str) -> bool:
    """'tiny', or the tiny model's folder named by its path (as tests and notebooks do)."""
    path = Path(model).expanduser()
    return model == "tiny" or (path.is_dir() and path.resolve() == _tiny_path().resolve())


def _model_rewards(declared) -> list[str]:
    """Warnings for the reward models that are folders of this machine, and for an LLM judge, which TRL lacks."""
    local = [Path(name).expanduser().resolve() for name in declared.reward_models if Path(name).expanduser().exists()]
    warnings = [f"reward model {path} is a folder of this machine: copy it with the project" for path in local]
    if declared.judge_rubric:
        warnings.append(
            "the run's LLM judge (JUDGE_RUBRIC in rewards.py) is not in reward_funcs: TRL's reward functions do not "
            "see the policy's model, so the project trains without it (a reward function that loads a model of its "
            "own can stand in for it)"
        )
    return warnings


def _local_model(config: Config) -> list[str]:
    """A warning when grpo.yaml names a folder of this machine: the project does not carry it."""
    path = Path(config.model).expanduser()
    if _is_tiny(config.model) or not path.exists():
        return []
    return [
        f"model_name_or_path is {path.resolve()}, a folder of this machine: copy it beside the project on the "
        "machine that trains, or set model_name_or_path in grpo.yaml to the model's hub id"
    ]


def grpo_yaml(settings: list[Setting], run_id: str, problems: list[str]) -> str:
    lines = [
        f"# Workbench run {run_id} for TRL {TRL_VERSION}: trl grpo --config grpo.yaml (or bash launch.sh).",
        "# PARITY.md says how each setting maps; after '#': the workbench field a value comes from.",
        *(f"# NOT THE RUN'S ALGORITHM: {problem}" for problem in problems),
    ]
    section = None
    for setting in settings:
        if setting.section != section:
            section = setting.section
            lines += ["", f"# {section}"]
        text = yaml.safe_dump({setting.name: setting.value}, default_flow_style=False, sort_keys=False, width=10**6)
        text = text.rstrip("\n")
        if setting.source and setting.source != setting.name and "\n" not in text:
            text += f"  # {setting.source}"
        lines.append(text)
    return "\n".join(lines) + "\n"


def parity_markdown(config: Config, settings: list[Setting], run: dict, problems: list[str], notes: list[str]) -> str:
    """PARITY.md: the defaults that differ, what maps exactly, TRL's own options, what is close, what is not."""
    P, G = config.prompts_per_step, config.group_size
    held_out = f"{run['held_out']} held out in eval.jsonl" if run["held_out"] else "none held out"
    model = f"tiny (its copy in {MODEL_FOLDER}/)" if _is_tiny(run["model"]) else run["model"]
    lines = [
        f"# Workbench run {run['run_id']} as a TRL {TRL_VERSION} project",
        "",
        f"Task {run['task']} ({run['train']} training prompts in train.jsonl, {held_out}), model "
        f"{model}, {config.steps} steps of P x G = {P} x {G} completions, advantage "
        f"estimator {config.advantage_estimator!r}. Written {datetime.now():%Y-%m-%d %H:%M} by `python -m workbench "
        "export`. Run it with `bash launch.sh` (its header shows several GPUs and nodes).",
    ]
    if problems:
        lines += ["", "## Not the run's algorithm", "", *(f"- **{problem}**" for problem in problems)]
    differs = [s for s in settings if s.name in TRL_DEFAULTS and s.value != TRL_DEFAULTS[s.name]]
    lines += ["", "## Where TRL's defaults differ, and what grpo.yaml sets", ""]
    lines += _table(
        ["setting", "TRL 1.16 default", "set to", "because"],
        [
            [s.name, _code(TRL_DEFAULTS[s.name]), _code(s.value), f"the run's {s.source}" if s.source else s.note]
            for s in differs
        ],
    )
    lines += ["", "## Maps exactly", ""]
    lines += _table(
        ["workbench", "TRL", "value", "note"],
        [[s.source, s.name, _code(s.value), s.note] for s in settings if s.source and s.parity == EXACT],
    )
    lines += ["", "## TRL options the workbench has no knob for, set to what it does", ""]
    lines += _table(
        ["TRL", "value", "TRL 1.16 default", "why"],
        [
            [s.name, _code(s.value), _code(TRL_DEFAULTS.get(s.name, "")), s.note]
            for s in settings
            if s.parity == MATCHED
        ],
    )
    lines += ["", "## Close, not identical", ""]
    close = {}  # one line per note: dtype and bf16 share precision's
    for s in settings:
        if s.parity == CLOSE:
            close.setdefault((s.source, s.note), []).append(s.name)
    lines += [f"- {', '.join(names)} ({source}): {note}." for (source, note), names in close.items()]
    lines += [f"- {note}" for note in notes]
    lines += ["", "## No TRL equivalent (not mapped)", ""]
    defaults = Config()
    lines += _table(
        ["workbench", "this run", "why"],
        [
            [
                name,
                _code(getattr(config, name))
                + (" (changed)" if getattr(config, name) != getattr(defaults, name) else ""),
                why,
            ]
            for name, why in NOT_MAPPED.items()
        ],
    )
    return "\n".join(lines) + "\n"


def launch_script(config: Config, run_id: str) -> str:
    """launch.sh: `trl grpo` on one GPU, or through accelerate on several GPUs and nodes, keeping P x G per step."""
    B, G = config.batch_size, config.group_size
    mixed = "no" if config.precision == "fp32" else "bf16"
    return LAUNCH.format(run_id=run_id, version=TRL_VERSION, B=B, G=G, mixed=mixed)


LAUNCH = """#!/usr/bin/env bash
# Workbench run {run_id} on TRL {version}. Settings: grpo.yaml; how they map to the run's: PARITY.md.
#
#   bash launch.sh                  one GPU (the CPU where there is none)
#   GPUS=8 bash launch.sh ddp       8 GPUs of this machine, data parallel
#   GPUS=8 bash launch.sh zero2     8 GPUs, DeepSpeed ZeRO-2 (pip install deepspeed)
#   GPUS=8 bash launch.sh fsdp      8 GPUs, FSDP2 (fsdp1: TRL's other FSDP config)
#
# Several nodes: the same command on each node, with its rank, e.g. 2 nodes of 8 GPUs:
#   NODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 GPUS=8 bash launch.sh zero2    # on node 0 (MASTER_ADDR: its address)
#   NODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 GPUS=8 bash launch.sh zero2    # on node 1
# which passes accelerate --num_machines 2 --machine_rank N --main_process_ip A --main_process_port 29500.
#
# Every optimizer step sees the run's P x G = {B} completions: per_device_train_batch_size x
# gradient_accumulation_steps x processes = {B}, steps_per_generation = gradient_accumulation_steps.
# PER_DEVICE (completions per forward pass, default {G}) trades memory for speed; the accumulation follows.
# vLLM samples faster: add --use_vllm true (its samples then differ slightly from the trained policy's; TRL
# corrects with importance sampling). Further arguments override grpo.yaml, e.g.
#   bash launch.sh single --max_steps 10 --report_to wandb
set -euo pipefail
cd "$(dirname "$0")"
MODE=${{1:-single}}
shift $(( $# > 0 ? 1 : 0 ))
GPUS=${{GPUS:-1}}
NODES=${{NODES:-1}}
PER_DEVICE=${{PER_DEVICE:-{G}}}
BATCH={B}
PROCESSES=$(( GPUS * NODES ))
if (( BATCH % (PER_DEVICE * PROCESSES) != 0 )); then
  echo "P x G = $BATCH completions do not split into $PROCESSES processes x PER_DEVICE=$PER_DEVICE" >&2
  exit 2
fi
ACCUMULATION=$(( BATCH / (PER_DEVICE * PROCESSES) ))
BATCH_ARGS=(--per_device_train_batch_size "$PER_DEVICE" --gradient_accumulation_steps "$ACCUMULATION"
            --steps_per_generation "$ACCUMULATION")
case "$MODE" in
  single) exec trl grpo --config grpo.yaml "${{BATCH_ARGS[@]}}" "$@" ;;
  ddp) ACCELERATE_CONFIG=multi_gpu ;;
  zero2) ACCELERATE_CONFIG=zero2 ;;
  fsdp) ACCELERATE_CONFIG=fsdp2 ;;
  *) echo "usage: [GPUS=N] [NODES=N NODE_RANK=R MASTER_ADDR=A] bash launch.sh [single|ddp|zero2|fsdp] [overrides]" >&2
     exit 2 ;;
esac
NODE_ARGS=()
if (( NODES > 1 )); then
  NODE_ARGS=(--num_machines "$NODES" --machine_rank "${{NODE_RANK:?set NODE_RANK: 0 on the main node, then 1, 2, ...}}"
             --main_process_ip "${{MASTER_ADDR:?set MASTER_ADDR to the address of node 0}}"
             --main_process_port "${{MASTER_PORT:-29500}}")
fi
exec trl grpo --config grpo.yaml --accelerate_config "$ACCELERATE_CONFIG" --num_processes "$PROCESSES" \\
  --mixed_precision {mixed} "${{NODE_ARGS[@]}}" "${{BATCH_ARGS[@]}}" "$@"
"""


def requirements() -> str:
    """The packages the project runs on, each pinned: to this environment's version (trl to the mapped one), or
    to the version the export was tested with where this environment lacks the package."""
    lines = [
        f"# the versions the workbench ran with (else those the export was tested with); trl is the version "
        f"grpo.yaml was mapped for ({TRL_VERSION})"
    ]
    for name in PINNED:
        version = TRL_VERSION if name == "trl" else _installed(name) or TESTED_WITH[name]
        lines.append(f"{name}=={version}")
    lines += ["# deepspeed  # for bash launch.sh zero2", "# vllm  # for --use_vllm true"]
    return "\n".join(lines) + "\n"


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name).split("+")[0]  # torch 2.x+cpu: the local label is no index's
    except importlib.metadata.PackageNotFoundError:
        return None


def _prompts_changed(store: Store, run_id: str, rows: list[dict], config: Config) -> list[str]:
    """A warning when the task's prompts are not those the run's first step drew (the task file changed)."""
    stored = store.query(
        "SELECT prompt FROM rollouts WHERE run_id = $1 AND step = 1 AND sample_idx = 0 ORDER BY group_id LIMIT $2",
        [run_id, config.prompts_per_step],
    )
    drawn = [row["prompt"] for row in rows[: config.prompts_per_step]]
    if stored.empty or [stored_prompt(p) for p in stored.prompt] == drawn:
        return []
    return [
        "the task's prompts differ from those the run's step 1 was stored with: its prompts file changed "
        "since the run, and train.jsonl holds the prompts as they are now"
    ]


def _out_folder(out: str | Path, force: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"--out {out} already holds files: choose a new or empty folder, or --force to overwrite")
    return out


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def _code(value) -> str:
    return f"`{json.dumps(value)}`" if value != "" else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["(none)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
