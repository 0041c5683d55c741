"""How the app and the CLI write values as text: long text cut to a width, rewards, statistics and durations.

One rule runs through the numbers: a value the store holds as NULL reads back as None or as NaN (through a
DataFrame), and both mean "there is none".
"""

from __future__ import annotations


def cut(text: str, width: int) -> str:
    """The text, cut to `width` characters with '...' when longer."""
    return text if len(text) <= width else text[: width - 3] + "..."


def nullable(value) -> float | None:
    """A value read from the store or a DataFrame as a float, or None where there is none (NaN is the store's
    NULL): what a number written as JSON, e.g. in an HTML data attribute, should be."""
    return None if value is None or value != value else float(value)


def reward_text(value) -> str:
    """A reward or a reward function's value, to 2 decimals: 'None' when the completion was not scored."""
    value = nullable(value)
    return "None" if value is None else f"{value:.2f}"


def number(value, spec: str = ".2f") -> str:
    """A statistic (a mean, a std, a per-token log-prob with spec '.4g'), formatted by `spec`: '-' when there is
    none."""
    value = nullable(value)
    return "-" if value is None else format(value, spec)


def duration(seconds: float) -> str:
    """A duration in whole seconds, as '1 min 15 s', or '42 s' under a minute (the status line's ETA)."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
