"""report_to: each step sent to an experiment tracker as TRL sends it; the store stays the source of truth.

`report_to` 'trackio' logs to trackio's local SQLite files (its own folder, $TRACKIO_DIR, ~/.cache/huggingface/trackio
by default; `trackio show` opens them), offline unless trackio's own environment names a Space; 'wandb' logs to
Weights & Biases when it is installed and logged in (or WANDB_MODE=offline). Per step, as TRL 1.16's GRPOTrainer logs
through transformers' callbacks with logging_steps=1 and log_completions=True:

- the metrics under TRL's names with transformers' `train/` prefix (`TRL_NAMES`), each reward function's mean and std
  (`train/rewards/<name>/mean`), the completions' lengths, and `train/global_step`;
- a `completions` table: step, prompt, completion, each reward function's value, advantage.

Some numbers are defined as TRL defines them rather than as the store's column: reward_std is the std of the step's
rewards (the store keeps the mean within-group std), and clip_ratio/region_mean is the share of tokens clipped.
Only rank 0 reports. A tracker that fails mid-run is dropped with a warning: the run goes on, and the store has it all.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import netrc
import os
import warnings

import torch

from workbench.config import Config, ConfigError
from workbench.events import Group

PROJECT = "grpo-workbench"  # the tracker's project; a run is named by its run_id and grouped by its task
TRL_NAMES = {  # the store's steps column -> TRL's metric name (logged with transformers' "train/" prefix)
    "reward_mean": "reward",
    "frac_zero_std": "frac_reward_zero_std",
    "kl": "kl",
    "entropy": "entropy",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    "completion_tokens_mean": "completions/mean_length",
    "truncated_frac": "completions/clipped_ratio",
    "clip_frac": "clip_ratio/region_mean",
    "sampling_logp_diff_mean": "sampling/sampling_logp_difference/mean",
    "sampling_logp_diff_max": "sampling/sampling_logp_difference/max",
}


class Tracker:
    """An open tracker run (a trackio or wandb Run object) and the module it came from (for its Table)."""

    def __init__(self, module, run):
        self.module, self.run = module, run

    def log(self, step: int, metrics: dict, groups: list[Group]) -> None:
        """The step's metrics and its completions table; a tracker that fails is dropped with a warning."""
        if self.run is None:
            return
        try:
            self.run.log(trl_metrics(step, metrics, groups), step=step)
            self.run.log({"completions": self.module.Table(dataframe=completions_table(step, groups))}, step=step)
        except Exception as error:  # the tracker's own trouble (its disk, its server) never stops a run
            message = f"report_to {self.module.__name__} failed at step {step} ({error}); the store has every step"
            warnings.warn(message, stacklevel=2)
            self.run = None

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def check_tracker(config: Config) -> None:
    """Refuse report_to when its package is missing or wandb has no login (it would ask on the terminal)."""
    if config.report_to == "none":
        return
    if importlib.util.find_spec(config.report_to) is None:
        raise ConfigError(f"report_to {config.report_to!r} needs its package: pip install {config.report_to}")
    if config.report_to == "wandb" and not wandb_logged_in():
        raise ConfigError("report_to 'wandb' needs a login: run `wandb login`, or set WANDB_MODE=offline")


def open_tracker(config: Config, run_id: str, task: str) -> Tracker | None:
    """The run's tracker run (resumed when it exists), or None for report_to 'none'."""
    if config.report_to == "none":
        return None
    check_tracker(config)
    module = importlib.import_module(config.report_to)
    settings = dict(project=PROJECT, name=run_id, group=task, config=config.to_dict(), resume="allow")
    if config.report_to == "wandb":
        return Tracker(module, module.init(id=run_id, **settings))
    return Tracker(module, module.init(**settings, embed=False, auto_log_gpu=False, auto_log_cpu=False))


def wandb_logged_in() -> bool:
    """WANDB_API_KEY, an api.wandb.ai entry in ~/.netrc, or an offline mode: where wandb.init asks for nothing."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return True
    try:
        return bool(netrc.netrc(os.environ.get("NETRC")).authenticators("api.wandb.ai"))
    except (OSError, netrc.NetrcParseError):
        return False


def trl_metrics(step: int, metrics: dict, groups: list[Group]) -> dict:
    """The step's metrics as TRL 1.16 logs them through transformers (`train/...`); None values left out."""
    rewards = torch.tensor([r if r is not None else float("nan") for g in groups for r in g.rewards])  # (B,)
    lengths = torch.tensor([n for g in groups for n in g.num_tokens], dtype=torch.float)  # (B,)
    logged = {TRL_NAMES[name]: value for name, value in metrics.items() if name in TRL_NAMES}
    logged |= {
        "reward_std": _nanstd(rewards),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
    }
    for name in groups[0].reward_values:
        values = torch.tensor([v if v is not None else float("nan") for g in groups for v in g.reward_values[name]])
        logged |= {f"rewards/{name}/mean": values.nanmean().item(), f"rewards/{name}/std": _nanstd(values)}
    logged = {f"train/{name}": value for name, value in logged.items() if value is not None and value == value}
    return logged | {"train/global_step": step}


def completions_table(step: int, groups: list[Group]):
    """TRL's log_completions table: step, prompt, completion, each reward function's value, advantage. -> DataFrame"""
    import pandas as pd  # only here: a run that reports nothing never pays its memory

    rows = []
    for g in groups:
        for k, completion in enumerate(g.completions):
            values = {name: v[k] for name, v in g.reward_values.items()}
            prompt = g.prompt if isinstance(g.prompt, str) else json.dumps(g.prompt, ensure_ascii=False)
            rows.append(
                {"step": step, "prompt": prompt, "completion": completion, **values, "advantage": g.advantages[k]}
            )
    return pd.DataFrame(rows)


def _nanstd(values: torch.Tensor) -> float | None:
    """TRL's nanstd: the std of the values that are not NaN, with Bessel's correction; None below two."""
    kept = values[~values.isnan()]
    return kept.std().item() if len(kept) > 1 else None
