"""The engine: the GRPO loop and what it runs on.

trainer (the loop on one screen: batch -> advantages -> update -> record), and the pieces it names:
batches (sampling rounds -> one scored batch per step), advantages (the group baseline or the critic's
GAE), ppo (PPO's critic: values, GAE, value loss, its update), update (the policy update), records (a
step's groups, metrics and health checks), run (open, resume and end a run). Beneath them: grpo (the
math, torch only), rollout and policy (sampling groups; the model with its LoRA adapter, the reference
being the adapter off), checkpoint, distributed (torchrun), evaluation (held-out greedy accuracy, pass@k).
Beside the loop: dryrun and rescoring (sample or score without training), runner (one run in the app's
background thread), sweep and lab (grids of runs, the experiments behind the lab's claims), hub and tiny
(loading models; the built-in tiny model), hardware (devices, dtypes, peak memory).
"""
