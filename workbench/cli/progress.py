"""A run followed from the terminal: a progress bar drawn from its events, the lines it prints, the exit code
it ends with (0 finished or stopped, 1 failed, 3 paused), and Ctrl-C that stops it after the step.

Only `train` imports this module, once it trains: it loads torch (through `distributed`) and tqdm.
"""

from __future__ import annotations

import signal
import sys
import threading

from tqdm.auto import tqdm

from workbench.config import Config
from workbench.engine import distributed
from workbench.events import (
    Evaluated,
    GroupsScored,
    HealthWarning,
    RunFailed,
    RunFinished,
    RunPaused,
    RunStarted,
    StepFinished,
)


def follow_to_the_end(events, follow) -> int:
    """follow(events) -> the exit code. Under torchrun, the SIGTERM that says another process failed raises
    ProcessStopped wherever this process is: when that is in `follow` (drawing the progress bar) rather than
    in the run, it is handed to the run where it waits, so that the run stores and reports it as its own
    failure (status failed, the error, the resume line) instead of being closed as stopped."""
    try:
        return follow(events)
    except distributed.ProcessStopped as stopped:
        return follow(_raised_in(events, stopped))


def _raised_in(events, exception: Exception):
    """The run's events from `exception` raised at the `yield` where the run waits."""
    yield events.throw(exception)
    yield from events


def follow_quietly(events) -> int:
    """A rank other than 0: print only why it failed (its traceback is nowhere else); the exit code as follow's."""
    for event in events:
        if isinstance(event, RunFailed):
            print(f"rank {distributed.rank()} failed at step {event.step}:\n{event.traceback}", file=sys.stderr)
            return 1
        if isinstance(event, RunPaused):
            return 3
    return 0


def follow(events, config: Config, workspace: str) -> int:
    """Print a progress bar from the events; the exit code says how the run ended."""
    bar = None
    for event in events:
        if isinstance(event, RunStarted):
            print(f"run {event.run_id}: task {event.task}, model {event.model}, {event.threads}", file=sys.stderr)
            bar = tqdm(total=config.steps, initial=event.start_step - 1, unit="step")
        elif isinstance(event, StepFinished):
            m = event.metrics
            kl = "-" if m["kl"] is None else f"{m['kl']:.4f}"
            reward = "-" if m["reward_mean"] is None else f"{m['reward_mean']:.3f}"
            bar.set_postfix(reward=reward, kl=kl, tokens=f"{m['completion_tokens_mean']:.1f}")
            if m["reward_mean"] is None:
                bar.write(
                    f"step {event.step}: no reward function scored any completion (all None), so nothing trained",
                    file=sys.stderr,
                )
            bar.update(1)
        elif isinstance(event, Evaluated):
            bar.write(_evaluated_line(event), file=sys.stderr)
        elif isinstance(event, HealthWarning):
            bar.write(f"health: {event.finding.explain()}", file=sys.stderr)
        elif isinstance(event, RunFinished):
            bar.close()
            print(
                f"run {event.run_id} {event.status} at step {event.step}; adapter in {event.checkpoint}",
                file=sys.stderr,
            )
        elif isinstance(event, RunPaused):
            if bar:
                bar.close()
            print(
                f"run {event.run_id} paused at step {event.step}: {event.failure.explain()}\n\n"
                f"fix the reward, then resume from step {event.step} with: "
                f"{distributed.launcher()} train --workspace {workspace} --resume {event.run_id} [--reward FILE]",
                file=sys.stderr,
            )
            return 3
        elif isinstance(event, RunFailed):
            if bar:
                bar.close()
            print(event.traceback, file=sys.stderr)
            print(
                f"run {event.run_id} failed at step {event.step}: {event.error}\n"
                f"resume with: {distributed.launcher()} train --workspace {workspace} --resume {event.run_id}",
                file=sys.stderr,
            )
            return 1
        elif isinstance(event, GroupsScored):
            pass
    return 0


def _evaluated_line(event: Evaluated) -> str:
    m = event.metrics
    reward = "-" if m["reward_mean"] is None else f"{m['reward_mean']:.3f}"
    return (
        f"step {event.step} held-out ({m['num_prompts']} prompts): reward {reward}, "
        f"greedy accuracy {m['greedy_accuracy']:.0%}, pass@1 {m['pass_at_1']:.0%}, "
        f"pass@{m['num_generations']} {m['pass_at_k']:.0%}"
    )


def stop_on_first_ctrl_c(stop: threading.Event) -> None:
    """First Ctrl-C: finish the step, checkpoint and stop. Second: interrupt at once."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
