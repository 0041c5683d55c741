"""The engine: the GRPO loop and what it runs on.

trainer (the loop, top to bottom), grpo (the math, torch only), rollout and policy (sampling groups;
the model with its LoRA adapter, the reference being the adapter off), critic (PPO's value head, for
the comparison), checkpoint, distributed (torchrun), evaluation (held-out greedy accuracy), dryrun
and rescoring (sample or score without training), runner (one run in the app's background thread),
sweep and lab (grids of runs and the experiments behind the README's claims), hub and tiny (loading
models; the built-in tiny model), hardware (devices, dtypes, peak memory).
"""
