"""A run's Config in TRL 1.16's names: each grpo.yaml setting and how it maps, TRL's defaults, what has no equivalent.

Each setting is one of three kinds: EXACT, a workbench field with the same meaning in TRL (its value
copied, or converted: steps to optimizer steps); MATCHED, a TRL option the workbench has no knob for,
set to what the workbench does (TRL's bias-corrected KL off, its prompts unshuffled, ...); CLOSE, the
nearest TRL has, with a note saying how it differs. `workbench.integrations.export` writes them as grpo.yaml and
PARITY.md.

The fields that map both ways are one table, `TWO_WAY` (with `OBJECTIVES`, the objective's variants that came
with GSPO, CISPO and GDPO): the export reads it from Config to TRL, and `workbench.integrations.trl.workbench_config`
reads it from TRL to Config when it watches a TRL run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from workbench.config import Config
from workbench.rewards.models import reward_model_name

TRL_VERSION = "1.16.0"  # the version whose fields and defaults this mapping was written against
EXACT, MATCHED, CLOSE = "exact", "matched", "close"

# TRL 1.16's defaults for the settings grpo.yaml writes (GRPOConfig, its TrainingArguments, ModelConfig), but
# those whose default is None meaning another field's value (bf16, steps_per_generation, epsilon_high: their
# notes say it); tests/test_export.py checks them against the installed TRL, so PARITY.md quotes what TRL does.
TRL_DEFAULTS = {
    "dtype": "float32",
    "use_peft": False,
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": None,
    "disable_dropout": False,
    "shuffle_dataset": True,
    "remove_unused_columns": False,
    "reward_weights": None,
    "multi_objective_aggregation": "sum_then_normalize",
    "num_generations": 8,
    "max_completion_length": 512,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "repetition_penalty": 1.0,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 1,
    "beta": 0.0,
    "use_bias_correction_kl": True,
    "epsilon": 0.2,
    "importance_sampling_level": "token",
    "num_iterations": 1,
    "scale_rewards": "group",
    "loss_type": "dapo",
    "mask_truncated_completions": False,
    "top_entropy_quantile": 1.0,
    "entropy_coef": 0.0,
    "learning_rate": 1e-6,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "max_steps": -1,
    "seed": 42,
    "gradient_checkpointing": True,
    "logging_steps": 10,
    "log_completions": False,
    "num_completions_to_print": None,
    "save_steps": 500,
    "report_to": "none",
    "project": "huggingface",
}

# Config fields with no TRL equivalent, and why; advantage_estimator is handled by `unsupported`.
NOT_MAPPED = {
    "gae_lambda": "PPO's GAE (advantage_estimator 'ppo'): GRPOTrainer has no critic",
    "cliprange_value": "PPO's clipped value loss (advantage_estimator 'ppo'): GRPOTrainer has no critic",
    "dynamic_sampling": "DAPO's dynamic sampling: GRPOTrainer trains on every sampled group",
    "dynamic_sampling_max_rounds": "with dynamic_sampling only",
    "micro_batch_tokens": "memory only: PER_DEVICE in launch.sh (per_device_train_batch_size) sets TRL's micro-batch; "
    "the loss is normalised by the whole batch either way",
    "reward_time_limit": "TRL calls reward functions in the training process, with no time limit",
    "reward_memory_mb": "TRL calls reward functions in the training process, with no memory limit",
    "judge_model": "the LLM judge (JUDGE_RUBRIC): GRPOTrainer's reward_funcs are functions and sequence classifiers",
    "eval_steps": "the workbench's held-out evaluation (greedy accuracy, pass@k) on the held-out prompts",
    "eval_split": "applied here: train.jsonl leaves the held-out prompts out",
    "eval_max_prompts": "the workbench's held-out evaluation",
    "eval_num_generations": "the workbench's held-out evaluation",
    "eval_success_reward": "the workbench's held-out evaluation",
    "device": "accelerate uses the GPUs it finds (launch.sh), the CPU where there are none",
    "threads": "torch's threads on a CPU: TRL leaves torch's default, one per core (OMP_NUM_THREADS sets it)",
    "log_token_stats": "the workbench's token view: TRL logs no per-token numbers",
    "kl_estimator": "TRL's KL term is always k3 (exp(d) - d - 1); verl's kl_loss_type offers k1, k2 and k3",
    "use_kl_in_reward": "TRL adds beta x KL to the loss only; verl's algorithm.use_kl_in_reward puts it in the reward",
}


@dataclass(frozen=True)
class Pair:
    """A Config field and the TRL field with its meaning, each converted to the other where they differ.

    `to_trl` takes the Config; `from_trl` takes TRL's values by TRL's names (a watched run's arguments, with its
    LoRA settings and process count). Either left out copies the value as it is.
    """

    workbench: str
    trl: str  # GRPOConfig's field, or TRL's LoRA option (ModelConfig's): a grpo.yaml key
    to_trl: Callable[[Config], object] | None = None
    from_trl: Callable[[dict], object] | None = None

    def trl_value(self, config: Config) -> object:
        return self.to_trl(config) if self.to_trl else getattr(config, self.workbench)

    def workbench_value(self, trl: dict) -> object:
        return self.from_trl(trl) if self.from_trl else trl[self.trl]


def _schedule(config: Config) -> str:
    if config.lr_scheduler_type == "constant" and config.warmup_steps:
        return "constant_with_warmup"  # transformers' 'constant' ignores warmup_steps
    return config.lr_scheduler_type


def _target_modules(trl: dict) -> list[str]:
    targets = trl["lora_target_modules"]  # peft's: a set of names, one name ('all-linear'), or None
    return [targets] if isinstance(targets, str) else sorted(targets or [])


def _prompts_per_step(trl: dict) -> int:
    """A step's P x G completions: G per device pass, passes accumulated, on each of the processes."""
    completions = trl["per_device_train_batch_size"] * trl["gradient_accumulation_steps"] * trl["num_processes"]
    return max(1, completions // trl["num_generations"])


def _scale_rewards(trl: dict) -> str:
    """TRL's scale_rewards, but with normalize_then_sum, where TRL scales by the batch's std whatever it says."""
    if trl.get("multi_objective_aggregation") == "normalize_then_sum":
        return "batch"
    return trl["scale_rewards"]


# The fields that map both ways. Steps go out as TRL's optimizer steps (a workbench step makes num_iterations of
# them) and come back as they are: a watched TRL run stores one step per optimizer step. `model` and
# `reward_weights` map both ways too but need what neither side's settings hold (the model's folder, the reward
# functions' names), so the export and the watch convert them where they have those.
TWO_WAY = (
    Pair("precision", "bf16", lambda c: c.precision != "fp32", lambda t: "bf16" if t["bf16"] else "fp32"),
    Pair("lora_rank", "lora_r"),
    Pair("lora_alpha", "lora_alpha", lambda c: _number(c.lora_alpha)),
    Pair("lora_target_modules", "lora_target_modules", lambda c: list(c.lora_target_modules), _target_modules),
    Pair("lora_dropout", "lora_dropout"),
    Pair("disable_dropout", "disable_dropout"),
    Pair("group_size", "num_generations"),
    Pair("max_new_tokens", "max_completion_length"),
    Pair("temperature", "temperature"),
    Pair("top_p", "top_p"),
    Pair("prompts_per_step", "gradient_accumulation_steps", from_trl=_prompts_per_step),
    Pair("beta", "beta"),
    Pair("clip_epsilon", "epsilon"),
    Pair(  # the upper clip: the workbench's 0 and TRL's None both mean "the same as the lower one"
        "epsilon_high",
        "epsilon_high",
        lambda c: c.epsilon_high or c.clip_epsilon,
        lambda t: 0.0 if t["epsilon_high"] in (None, t["epsilon"]) else t["epsilon_high"],
    ),
    Pair("num_iterations", "num_iterations"),
    Pair("scale_rewards", "scale_rewards", from_trl=_scale_rewards),
    Pair("loss_type", "loss_type", lambda c: "dapo" if c.loss_type == "bnpo" else c.loss_type),  # see its note
    Pair("mask_truncated_completions", "mask_truncated_completions"),
    Pair("learning_rate", "learning_rate"),
    Pair("lr_scheduler_type", "lr_scheduler_type", _schedule),
    Pair("warmup_steps", "warmup_steps", lambda c: c.warmup_steps * c.num_iterations),
    Pair("weight_decay", "weight_decay"),
    Pair("max_grad_norm", "max_grad_norm"),
    Pair(
        "steps",
        "max_steps",
        lambda c: c.steps * c.num_iterations,
        lambda t: t["max_steps"] if t["max_steps"] > 0 else Config.steps,  # -1: TRL counts epochs instead
    ),
    Pair("seed", "seed"),
)
# The objective's variants TRL 1.16 names as the workbench does (GSPO's sequence-level ratio; GDPO's per-function
# normalisation; CISPO is a loss_type), each mapped both ways as TWO_WAY's fields are.
OBJECTIVES = (
    Pair("importance_sampling_level", "importance_sampling_level"),
    Pair("multi_objective_aggregation", "multi_objective_aggregation"),
)
BY_TRL_NAME = {pair.trl: pair for pair in TWO_WAY + OBJECTIVES}


def workbench_values(trl: dict) -> dict:
    """Config values from TRL's, by TRL's names: every pair of `TWO_WAY` and `OBJECTIVES` whose TRL field `trl`
    holds (TRL's loss_type 'cispo' and its epsilon_high, the cap, come back as they are)."""
    return {pair.workbench: pair.workbench_value(trl) for pair in TWO_WAY + OBJECTIVES if pair.trl in trl}


@dataclass(frozen=True)
class Setting:
    """One grpo.yaml entry: TRL's field, its value, and how it relates to the workbench."""

    section: str
    name: str  # TRL's field, a grpo.yaml key
    value: object
    source: str  # the workbench field it comes from; "" for a TRL option the workbench has no knob for
    parity: str = EXACT  # EXACT: the same meaning; MATCHED: a TRL option set to what the workbench does; CLOSE
    note: str = ""


def trl_settings(
    config: Config, model: str, reward_names: list[str], run_id: str, reward_models: tuple[str, ...] = ()
) -> list[Setting]:
    """Every grpo.yaml entry of a config, in sections; `reward_names` in the reward source's order, then
    `reward_models` (the source's and the config's, by the id or path TRL loads)."""
    scored_by = [f"rewards.{name}" for name in reward_names] + list(reward_models)
    weighed = reward_names + [reward_model_name(path) for path in reward_models]
    P, G, mu = config.prompts_per_step, config.group_size, config.num_iterations
    per_step = f"x {mu}: TRL counts optimizer steps, a workbench step makes num_iterations of them" if mu > 1 else ""
    bf16 = config.precision != "fp32"
    auto = config.precision == "auto"
    precision = (
        (CLOSE, "'auto' (bf16 where the hardware does it) as bf16, what it picks on a GPU") if auto else (EXACT, "")
    )
    lora_dropout = (EXACT, "")
    if config.disable_dropout and config.lora_dropout > 0:
        lora_dropout = (CLOSE, "TRL's disable_dropout zeroes the adapter's dropout too, which the workbench keeps")
    bnpo = (
        "the workbench's bnpo divides by the whole batch's tokens, as TRL's dapo" if config.loss_type == "bnpo" else ""
    )
    cispo = "; with loss_type cispo, the cap on the importance weight itself" if config.loss_type == "cispo" else ""
    gdpo = ""
    if config.multi_objective_aggregation == "normalize_then_sum":
        gdpo = "TRL ignores it with normalize_then_sum and scales by the batch's std, as the workbench's 'batch'"
    tiny = "the built-in tiny model, copied into the project's model/" if config.model == "tiny" else ""
    train_file = "train.jsonl: the task's training prompts"

    def section(title: str, *rows: tuple) -> list[Setting]:
        return [Setting(title, *row) for row in rows]

    def two_way(trl: str, parity: str = EXACT, note: str = "") -> tuple:
        """A row of `TWO_WAY`: TRL's field, the value the config converts to, the workbench field."""
        pair = BY_TRL_NAME[trl]
        return trl, pair.trl_value(config), pair.workbench, parity, note

    return [
        *section(
            "model and adapter",
            ("model_name_or_path", model, "model", EXACT, tiny),
            ("dtype", "bfloat16" if bf16 else "float32", "precision", *precision),
            two_way("bf16", *(precision if auto else (EXACT, "TRL's default: true (unless fp16)"))),
            ("use_peft", True, "", MATCHED, "the workbench always trains a LoRA adapter"),
            two_way("lora_r"),
            two_way("lora_alpha"),
            two_way("lora_dropout", *lora_dropout),
            two_way("lora_target_modules"),
            two_way("disable_dropout"),
        ),
        *section(
            "prompts and rewards",
            ("datasets", [{"path": "json", "data_files": "train.jsonl", "split": "train"}], "", MATCHED, train_file),
            ("shuffle_dataset", False, "", MATCHED, "train.jsonl lists the prompts in the order the run drew them"),
            ("remove_unused_columns", False, "", MATCHED, "reward functions get every column of the prompts"),
            ("reward_funcs", scored_by, "reward_models", EXACT, "rewards.py's functions, then the reward models"),
            ("reward_weights", [config.reward_weights.get(name, 1.0) for name in weighed], "reward_weights"),
            two_way("multi_objective_aggregation"),
        ),
        *section(
            "sampling",
            two_way("num_generations"),
            two_way("max_completion_length"),
            two_way("temperature"),
            two_way("top_p"),
            ("top_k", 0, "", MATCHED, "the workbench has no top-k"),
            ("repetition_penalty", 1.0, "", MATCHED, "the workbench has no repetition penalty"),
        ),
        *section(
            "batch: one optimizer step sees P x G completions, sampled for it",
            ("per_device_train_batch_size", G, "group_size", EXACT, "completions per forward pass"),
            two_way("gradient_accumulation_steps", EXACT, "x per_device_train_batch_size = P x G"),
            (
                "steps_per_generation",
                P,
                "prompts_per_step",
                EXACT,
                "a batch sampled per step (TRL's default: the above)",
            ),
        ),
        *section(
            "objective",
            two_way("beta"),
            ("use_bias_correction_kl", False, "", MATCHED, "the workbench's KL term is beta x k3, not ratio-weighted"),
            two_way("epsilon"),
            two_way("epsilon_high", EXACT, "its 0 means clip_epsilon" + cispo),
            two_way("importance_sampling_level"),
            two_way("num_iterations"),
            two_way("scale_rewards", EXACT, gdpo),
            two_way("loss_type", EXACT, bnpo),
            two_way("mask_truncated_completions"),
            ("top_entropy_quantile", 1.0, "", MATCHED, "every completion token is in the loss"),
            ("entropy_coef", 0.0, "", MATCHED, "the workbench has no entropy bonus"),
        ),
        *section(
            "optimisation",
            two_way("learning_rate"),
            two_way("lr_scheduler_type"),
            two_way("warmup_steps", EXACT, per_step),
            two_way("weight_decay"),
            two_way("max_grad_norm"),
            two_way("max_steps", EXACT, per_step),
            two_way("seed"),
            ("gradient_checkpointing", False, "", MATCHED, "no effect on the math; true saves memory"),
        ),
        *section(
            "logging and saving",
            ("logging_steps", 1, "", MATCHED, "the workbench logs every step"),
            ("log_completions", True, "", MATCHED, "the workbench stores every completion"),
            ("num_completions_to_print", G, "", MATCHED, "prints a group's worth per step"),
            ("save_steps", config.checkpoint_every * mu, "checkpoint_every", EXACT, per_step),
            ("output_dir", "output", "", MATCHED, "checkpoints and the adapter"),
            ("run_name", run_id, "", MATCHED, "the workbench run's id"),
            ("report_to", config.report_to, "report_to", EXACT, "TRL's metric names and completions table, as here"),
            ("project", "grpo-workbench", "", MATCHED, "trackio's project: the one the workbench's runs report to"),
        ),
    ]


def unsupported(config: Config) -> list[str]:
    """What GRPOTrainer cannot do of this config, each naming its field: the project then differs in kind."""
    problems = []
    estimator = config.advantage_estimator
    if estimator != "grpo":
        peer = {
            "rloo": "TRL's RLOOTrainer (`trl rloo`) is the leave-one-out peer",
            "ppo": "TRL's critic-based peer is its experimental PPOTrainer",
        }.get(estimator, "GRPOTrainer always subtracts the group's mean")
        problems.append(
            f"advantage_estimator={estimator!r} is not GRPOTrainer's: it uses the group mean as the baseline "
            f"('grpo'), so this project trains GRPO, not the run's estimator ({peer})"
        )
    if config.dynamic_sampling:
        problems.append(
            "dynamic_sampling=True has no GRPOTrainer equivalent: TRL trains on every sampled group, "
            "also those whose rewards are all equal"
        )
    if config.beta > 0 and config.use_kl_in_reward:
        problems.append(
            "use_kl_in_reward=True has no GRPOTrainer equivalent: TRL adds beta x KL to the loss, so this project "
            "trains with the KL in the loss, not subtracted from the reward"
        )
    if config.beta > 0 and config.kl_estimator != "k3":
        problems.append(
            f"kl_estimator={config.kl_estimator!r} has no GRPOTrainer equivalent: TRL's KL term is always k3, "
            f"exp(d) - d - 1, so this project penalises k3, not the run's {config.kl_estimator}"
        )
    return problems


def close_notes(config: Config, num_prompts: int, reward_versions: int) -> list[str]:
    """Where the TRL run is close to the workbench run but not identical, besides the CLOSE settings."""
    P = config.prompts_per_step
    notes = [
        "Same seed, different samples: TRL's sampler (transformers' generate) draws differently from the "
        "workbench's, and the LoRA adapter's random init differs, so the runs agree in distribution, not "
        "sample by sample.",
        f"Prompt order: train.jsonl lists the {num_prompts} training prompts in the order the run drew them "
        f"(its first epoch, seed {config.seed}) and shuffle_dataset is off, so TRL's first {num_prompts // P} "
        f"steps see the run's prompts. Later epochs repeat that order where the workbench shuffles again, and "
        f"TRL leaves out the last {num_prompts % P} prompts of each epoch (its batches are whole).",
        "Dropout: disable_dropout zeroes the model's dropout modules in both; the workbench also zeroes the "
        "attention dropout transformers applies as a float (attention_dropout), which TRL leaves on. Most "
        "models have none.",
        "Completion logging: the workbench stores every completion in DuckDB; log_completions prints a "
        "table each logging step and sends it to report_to's trackers (wandb, trackio).",
    ]
    if config.num_iterations > 1 and (config.lr_scheduler_type != "constant" or config.warmup_steps):
        notes.append(
            "num_iterations > 1 with a changing learning rate: TRL moves the schedule at each of the "
            "num_iterations optimizer steps on a batch, the workbench once per batch."
        )
    if reward_versions > 1:
        notes.append(f"The run was scored by {reward_versions} reward versions; rewards.py is the last of them.")
    return notes


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value  # TRL's lora_alpha is an int field
