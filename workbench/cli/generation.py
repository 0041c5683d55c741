"""`generate`: one prompt's completions from the base model and from a run's adapter at a kept step, each with its
rewards (workbench.engine.playground). The engine, and torch with it, loads inside `run_generate`."""

from __future__ import annotations

import argparse


def add_parser(commands) -> None:
    parser = commands.add_parser(
        "generate", help="completions of a prompt from the base model and from a run's adapter, with their rewards"
    )
    parser.add_argument("run_id", help="the run whose model, adapter and reward to use")
    parser.add_argument(
        "--prompt",
        required=True,
        help="the prompt: a task prompt's text (its columns go to the reward functions) or any text",
    )
    parser.add_argument(
        "--step", type=int, help="the adapter's step (one with a kept adapter; 0: the base model alone) [the latest]"
    )
    parser.add_argument("--workspace", default="runs", help="folder of the store and the run's adapters")
    parser.add_argument("--num", type=int, default=4, metavar="N", help="completions per side [4]")
    parser.add_argument("--max-new-tokens", type=int, help="longest completion [the run's]")
    parser.add_argument("--temperature", type=float, help="sampling temperature [the run's]")
    parser.add_argument("--greedy", action="store_true", help="the most likely token each time (one completion)")
    parser.add_argument("--seed", type=int, default=0, help="the random draws, the same for both sides [0]")
    parser.set_defaults(command=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from workbench.engine.playground import generate

    generation = generate(
        args.workspace,
        args.run_id,
        args.prompt,
        step=args.step,
        num=args.num,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        greedy=args.greedy,
        seed=args.seed,
    )
    print(generation.report())
    return 0
