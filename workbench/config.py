"""Every knob of a run, in one flat frozen dataclass.

The CLI, the app's form, notebooks and tests all build a `Config`; it is stored with the run.
Each field's docstring is its help text everywhere (see `field_docs`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import math
from dataclasses import dataclass, field

from workbench import variants


class ConfigError(ValueError):
    """A config value a user gave is invalid; the message names the field."""


CHOICES = {  # the fields that take one of a few words; the app shows them as dropdowns
    "advantage_estimator": tuple(variants.ESTIMATORS),
    "scale_rewards": tuple(variants.SCALINGS),
    "loss_type": tuple(variants.LOSS_TYPES),
    "importance_sampling_level": tuple(variants.IMPORTANCE_SAMPLING_LEVELS),
    "multi_objective_aggregation": tuple(variants.AGGREGATIONS),
    "kl_estimator": tuple(variants.KL_ESTIMATORS),
    "lr_scheduler_type": ("constant", "linear", "cosine"),
    "precision": ("auto", "bf16", "fp32"),
    "device": ("auto", "cpu", "cuda"),
    "report_to": ("none", "trackio", "wandb"),
}


# Fields older runs stored that no longer exist; their stored configs still load.
RETIRED = {"micro_batch_size"}  # replaced by micro_batch_tokens


@dataclass(frozen=True)
class Config:
    # model
    model: str = "tiny"
    """'tiny' (the built-in model), a Hugging Face hub id, or a local folder"""
    lora_rank: int = 16
    """LoRA rank r of the adapter"""
    lora_alpha: float = 32.0
    """LoRA alpha; the adapter's update is scaled by alpha / rank"""
    lora_dropout: float = 0.0
    """dropout on the adapter's input"""
    lora_target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """module names that get a LoRA adapter, or ('all-linear',)"""

    # sampling
    group_size: int = 8
    """G: completions sampled per prompt; advantages compare completions within a group"""
    prompts_per_step: int = 8
    """P: prompts per step; a step samples P x G completions"""
    max_new_tokens: int = 48
    """longest completion; a completion cut here is marked truncated"""
    temperature: float = 1.0
    """sampling temperature; log-probs are taken at this temperature too"""
    top_p: float = 1.0
    """nucleus sampling threshold (1.0 samples from the whole distribution)"""

    # optimisation
    learning_rate: float = 5e-4
    """AdamW learning rate for the adapter (suits the tiny model; billion-parameter models want ~1e-5)"""
    lr_scheduler_type: str = "constant"
    """after warmup, 'constant', or 'linear' / 'cosine' decay towards 0 at the last step (TRL's default: linear)"""
    warmup_steps: int = 0
    """steps over which the learning rate rises linearly from 0 to learning_rate"""
    weight_decay: float = 0.0
    """AdamW weight decay on the adapter (TRL's default, 0; torch's AdamW would apply 0.01)"""
    beta: float = 0.04
    """KL weight against the reference (the base model with the adapter off); 0 skips the reference"""
    clip_epsilon: float = 0.2
    """PPO clip range: the ratio pi_theta / pi_old is clipped to [1 - eps, 1 + eps]"""
    num_iterations: int = 1
    """inner updates per sampled batch (mu in the paper); pi_old is the sampling policy"""
    advantage_estimator: str = "grpo"
    """b in A = r - b: 'grpo' group mean, 'rloo' mean of the other G - 1, 'reinforce' 0 or batch mean, 'ppo' a critic"""
    gae_lambda: float = 0.95
    """with advantage_estimator 'ppo': GAE's lambda (gamma is 1); 1 gives A_t = r - V_t, 0 one-step differences"""
    cliprange_value: float = 0.2
    """with 'ppo': the critic's value is clipped to this distance from its value at sampling, as PPO's value loss"""
    scale_rewards: str = "group"
    """divide advantages by the reward std of the 'group' (DeepSeekMath) or the 'batch', or 'none' (Dr. GRPO)"""
    loss_type: str = "grpo"
    """'grpo': each completion's token mean, then their mean; 'bnpo', 'dapo': the batch's token mean; 'dr_grpo'"""
    epsilon_high: float = 0.0
    """upper clip range of the ratio, DAPO's clip-higher (e.g. 0.28); 0: the same as clip_epsilon. With loss_type
    'cispo': the cap on the importance weight itself, as TRL's (ScaleRL suggests 5.0)"""
    importance_sampling_level: str = "token"
    """the ratio pi_theta / pi_old per 'token' (GRPO), or per 'sequence': exp of the completion's mean log ratio,
    clipped as one (GSPO)"""
    multi_objective_aggregation: str = "sum_then_normalize"
    """several reward functions: their weighted sum is the reward ('sum_then_normalize'), or each is normalised
    within its group before the sum ('normalize_then_sum', GDPO; with scale_rewards 'batch')"""
    kl_estimator: str = "k3"
    """the per-token KL estimate, d = log pi_ref - log pi_theta: 'k1' -d, 'k2' d^2 / 2, 'k3' exp(d) - d - 1 (GRPO's)"""
    use_kl_in_reward: bool = False
    """subtract beta x the completion's summed KL from its reward before the advantages (PPO-RLHF's placement,
    verl's name), instead of adding beta x KL to the loss"""
    mask_truncated_completions: bool = False
    """leave completions cut at max_new_tokens out of the loss (DAPO); they still count in their group's baseline"""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: drop groups whose rewards are all equal and sample more prompts until P groups differ"""
    dynamic_sampling_max_rounds: int = 3
    """with dynamic_sampling, the most extra rounds of P prompts a step samples; then it trains on the groups it has"""
    log_token_stats: bool = True
    """store each trained completion's per-token log-probs (policy and reference), ratio, clipping and entropy
    (the `tokens` table, the app's token view)"""
    micro_batch_tokens: int = 1536
    """tokens per forward/backward pass (each group's prompt once, then its completions' tokens), in whole groups"""
    max_grad_norm: float = 1.0
    """clip the adapter's gradient norm to this (0 turns clipping off)"""
    disable_dropout: bool = True
    """turn off the model's own dropout (as TRL does): with it on, pi_theta differs from pi_ref at step 1"""

    # rewards
    reward_weights: dict[str, float] = field(default_factory=dict)
    """weight of each reward function by name, e.g. {'correct': 1.0, 'format_reward': 0.2}; unnamed ones weigh 1.0"""
    reward_time_limit: float = 5.0
    """seconds one reward function may take on one step's completions before the run pauses"""
    reward_memory_mb: int = 4096
    """address-space limit of the process that runs reward code, in MiB (0: no limit)"""
    reward_models: tuple[str, ...] = ()
    """reward models scored beside the reward functions, each under its id's last part: hub ids or local folders of
    sequence classifiers with one label, as TRL's reward_funcs takes them (added to the source's REWARD_MODELS)"""
    judge_model: str = ""
    """the LLM judge's model (asked the reward source's JUDGE_RUBRIC): empty for the run's own base model with the
    adapter off, no second copy loaded; or a hub id or local folder of a causal LM"""

    # held-out evaluation
    eval_steps: int = 0
    """evaluate on the task's held-out prompts before the first step, every N steps and at the last (0: never)"""
    eval_split: float = 0.0
    """for a task without an eval file: the fraction of its prompts held out of training for evaluation"""
    eval_max_prompts: int = 32
    """held-out prompts an evaluation uses (the first N of the eval file or split)"""
    eval_num_generations: int = 4
    """k: completions sampled per held-out prompt for the mean reward and pass@k"""
    eval_success_reward: float = 1.0
    """a completion counts as correct (greedy accuracy, pass@k) when its reward is at least this (the task's best)"""

    # run
    steps: int = 60
    """optimizer steps to train for (a resumed run continues up to this step)"""
    checkpoint_every: int = 20
    """save the adapter, optimizer and RNG state every N steps (and always at the end or stop)"""
    seed: int = 0
    """seeds prompt order, sampling and LoRA init: the same seed gives the same rollouts"""
    precision: str = "auto"
    """'bf16' autocast, 'fp32', or 'auto' (bf16 on GPUs and on CPUs with native bf16)"""
    device: str = "auto"
    """'cpu', 'cuda', or 'auto' (cuda when available)"""
    threads: int = 0
    """torch threads of the run; 0: the cores it gets (its share of the machine, less the cores other processes
    keep busy), decided again after every step"""
    report_to: str = "none"
    """also send each step's metrics (TRL's names) and completions table to 'trackio' (local files) or 'wandb';
    the store keeps everything either way"""

    def __post_init__(self) -> None:
        # one name as peft takes it (target_modules="all-linear"), or a list as JSON stores it
        for name in ("lora_target_modules", "reward_models"):
            value = getattr(self, name)
            if isinstance(value, str | list):
                object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not self.model.strip():
            raise ConfigError("model must name a model: 'tiny', a hub id, or a local folder")
        _at_least(self, "group_size", 2, "GRPO compares completions of the same prompt")
        for name in ("prompts_per_step", "max_new_tokens", "lora_rank", "num_iterations"):
            _at_least(self, name, 1)
        for name in ("micro_batch_tokens", "steps", "checkpoint_every"):
            _at_least(self, name, 1)
        _at_least(self, "warmup_steps", 0)
        _at_least(self, "threads", 0)
        _at_least(self, "dynamic_sampling_max_rounds", 0)
        _at_least(self, "eval_steps", 0)
        _at_least(self, "eval_max_prompts", 1)
        _at_least(self, "eval_num_generations", 1)
        if not 0 <= self.eval_split < 1:
            raise ConfigError(f"eval_split must be in [0, 1), got {self.eval_split}")
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"gae_lambda must be in [0, 1], got {self.gae_lambda}")
        if not self.cliprange_value > 0:
            raise ConfigError(f"cliprange_value must be greater than 0, got {self.cliprange_value}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        for name in ("temperature", "learning_rate", "lora_alpha"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be greater than 0, got {getattr(self, name)}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.beta < 0:
            raise ConfigError(f"beta must be 0 or more (0 turns the KL penalty off), got {self.beta}")
        if not 0 < self.clip_epsilon < 1:
            raise ConfigError(f"clip_epsilon must be in (0, 1), got {self.clip_epsilon}")
        if self.epsilon_high < 0:
            raise ConfigError(f"epsilon_high must be 0 (the same as clip_epsilon) or more, got {self.epsilon_high}")
        if self.max_grad_norm < 0:
            raise ConfigError(f"max_grad_norm must be 0 or more, got {self.max_grad_norm}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {getattr(self, name)!r}")
        if self.scale_rewards == "group" and self.advantage_estimator not in variants.GROUP_BASELINES:
            raise ConfigError(
                f"scale_rewards 'group' divides by each group's reward std, which fits a group baseline "
                f"({', '.join(variants.GROUP_BASELINES)}), "
                f"not advantage_estimator {self.advantage_estimator!r}: use scale_rewards 'batch' or 'none'"
            )
        self._check_objective()
        if not self.reward_time_limit > 0:
            raise ConfigError(f"reward_time_limit must be greater than 0 seconds, got {self.reward_time_limit}")
        if not isinstance(self.reward_memory_mb, int) or self.reward_memory_mb < 0:
            raise ConfigError(
                f"reward_memory_mb must be 0 (no limit) or a number of MiB, got {self.reward_memory_mb!r}"
            )
        if not isinstance(self.reward_weights, dict):
            raise ConfigError(f"reward_weights must map reward function names to weights, got {self.reward_weights!r}")
        for name, weight in self.reward_weights.items():
            if not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ConfigError(f"reward_weights[{name!r}] must be a finite number, got {weight!r}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules must name at least one module, or 'all-linear'")
        if not all(isinstance(name, str) and name.strip() for name in self.reward_models):
            raise ConfigError(f"reward_models must be hub ids or local folders, got {list(self.reward_models)!r}")

    def _check_objective(self) -> None:
        """The combinations of GSPO, GDPO and the KL's placement that mean nothing, refused naming the fields."""
        if self.importance_sampling_level == "sequence" and self.advantage_estimator == "ppo":
            raise ConfigError(
                "importance_sampling_level 'sequence' gives one ratio per completion, which needs one advantage per "
                "completion: advantage_estimator 'ppo' gives one per token (GAE); use importance_sampling_level 'token'"
            )
        if self.multi_objective_aggregation == "normalize_then_sum":
            if self.advantage_estimator != "grpo" or self.scale_rewards != "batch":
                raise ConfigError(
                    "multi_objective_aggregation 'normalize_then_sum' (GDPO) normalises each reward function within "
                    "its group, then the sum over the batch, as TRL does whatever its scale_rewards: it needs "
                    f"advantage_estimator 'grpo' and scale_rewards 'batch' (got {self.advantage_estimator!r}, "
                    f"{self.scale_rewards!r})"
                )
            if self.use_kl_in_reward:
                raise ConfigError(
                    "use_kl_in_reward subtracts the KL in reward units, and multi_objective_aggregation "
                    "'normalize_then_sum' puts each reward function in units of its group's std before the sum: "
                    "the penalty has no scale there; use one or the other"
                )

    def learning_rate_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (1-based), as transformers' schedulers give it.

        With s = step - 1: s / warmup_steps during warmup, then 1 (constant), (steps - s) / (steps -
        warmup_steps) (linear) or (1 + cos(pi * (s - warmup_steps) / (steps - warmup_steps))) / 2 (cosine),
        times learning_rate.
        """
        s = step - 1
        if s < self.warmup_steps:
            return self.learning_rate * s / self.warmup_steps
        span = max(1, self.steps - self.warmup_steps)
        if self.lr_scheduler_type == "linear":
            return self.learning_rate * max(0.0, (self.steps - s) / span)
        if self.lr_scheduler_type == "cosine":
            return self.learning_rate * max(0.0, 0.5 * (1 + math.cos(math.pi * (s - self.warmup_steps) / span)))
        return self.learning_rate

    @property
    def batch_size(self) -> int:
        """B = P x G completions per step."""
        return self.prompts_per_step * self.group_size

    def changed(self) -> dict:
        """The fields that differ from their defaults: what a run's command line or summary shows."""
        defaults = Config()
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(defaults, f.name)
        }

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, values: dict) -> Config:
        """Build a Config from plain values, naming any field that does not exist."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RETIRED}
        if isinstance(values.get("scale_rewards"), bool):  # stored before 'batch' existed
            values["scale_rewards"] = "group" if values["scale_rewards"] else "none"
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**values)


def _at_least(config: Config, name: str, minimum: int, why: str = "") -> None:
    value = getattr(config, name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        reason = f": {why}" if why else ""
        raise ConfigError(f"{name} must be an integer of at least {minimum}, got {value!r}{reason}")


def _plain(value):
    if isinstance(value, dict):
        return dict(value)
    return list(value) if isinstance(value, tuple) else value


@functools.cache
def field_docs() -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), by field name."""
    body = ast.parse(inspect.getsource(Config)).body[0].body
    docs = {}
    for node, following in zip(body, body[1:]):
        is_doc = isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
        if isinstance(node, ast.AnnAssign) and is_doc:
            docs[node.target.id] = following.value.value
    return docs
