"""The run form, generated from `Config`: one widget per field, its docstring as the help, and back.

Numbers are numbers, on/off fields are checkboxes, fields with a few choices are dropdowns; the
module lists (lora_target_modules) and reward weights are typed as `a, b` and `name=weight, ...`.
Choosing a model fills in its suggested settings (`hub.MODEL_PRESETS`); they stay editable.
"""

from __future__ import annotations

import dataclasses
import typing

import gradio as gr

from workbench.config import CHOICES, Config, ConfigError, field_docs
from workbench.engine.hub import MODEL_CHOICES, MODEL_PRESETS

FIELDS = [f.name for f in dataclasses.fields(Config)]
MAIN = ("model", "steps", "group_size", "prompts_per_step", "max_new_tokens", "learning_rate", "beta")
KINDS = typing.get_type_hints(Config)
DEFAULTS = Config()
PRESET_FIELDS = tuple(MODEL_PRESETS["tiny"])  # every preset names the same fields


def build(config: Config) -> list[gr.components.Component]:
    """The widgets in `FIELDS` order: the main ones in view, the rest under 'All settings'."""
    widgets = {}
    with gr.Row():
        for name in MAIN:
            widgets[name] = _widget(name, getattr(config, name))
    with gr.Accordion("All settings", open=False):
        rest = [name for name in FIELDS if name not in MAIN]
        for start in range(0, len(rest), 4):
            with gr.Row():
                for name in rest[start : start + 4]:
                    widgets[name] = _widget(name, getattr(config, name))
    # `select`, not `change`: a user's pick (the same model again too), never a value set by code (a published task's)
    widgets["model"].select(
        preset, widgets["model"], [widgets[name] for name in PRESET_FIELDS], api_visibility="private"
    )
    return [widgets[name] for name in FIELDS]


def first_config() -> Config:
    """What the form shows first, the app's first run: Config's defaults with its model's preset (tiny's)."""
    return dataclasses.replace(DEFAULTS, **MODEL_PRESETS.get(DEFAULTS.model, {}))


def preset(model: str) -> list:
    """The model's suggested settings in `PRESET_FIELDS` order, said in a notice; unchanged for a model without."""
    values = MODEL_PRESETS.get(model)
    if values is None:
        return [gr.skip()] * len(PRESET_FIELDS)
    said = ", ".join(f"{name} {_said(value)}" for name, value in values.items())
    gr.Info(f"Suggested settings for {model}: {said}")
    return [_text(value) for value in values.values()]


def pick(form: list, *names: str) -> list:
    """The form's widgets of the fields `names`."""
    return [form[FIELDS.index(name)] for name in names]


def _widget(name: str, value) -> gr.components.Component:
    kind, help_text = KINDS[name], field_docs()[name]
    common = dict(label=name, info=help_text, elem_id=name)
    if name in CHOICES:
        return gr.Dropdown(list(CHOICES[name]), value=value, **common)
    if name == "model":  # the models that work offline, or any hub id or folder typed in
        common["info"] += f"; choosing one fills in its suggested {', '.join(PRESET_FIELDS)}"
        return gr.Dropdown(list(MODEL_CHOICES), value=value, allow_custom_value=True, **common)
    if kind is bool:
        return gr.Checkbox(value, **common)
    if kind in (int, float):
        return gr.Number(value, precision=0 if kind is int else None, **common)
    return gr.Textbox(_text(value), **common)


def values(config: Config) -> list:
    """What the form shows for `config`, in `FIELDS` order (also the API's argument order)."""
    return [_text(getattr(config, name)) for name in FIELDS]


def to_config(form_values) -> Config:
    """The Config the form describes; an empty, mistyped or invalid value names its field."""
    given = dict(zip(FIELDS, form_values, strict=True))
    optional = {name for name in FIELDS if _text(getattr(DEFAULTS, name)) == ""}  # empty by default: weights, models
    missing = [name for name, value in given.items() if value is None or (value == "" and name not in optional)]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be given")
    return Config.from_dict({name: _parse(name, value) for name, value in given.items()})


def _parse(name: str, value):
    kind = KINDS[name]
    if kind is int:
        if float(value) != int(float(value)):
            raise ConfigError(f"{name} must be a whole number, got {value}")
        return int(float(value))
    if kind is float:
        return float(value)
    if kind == tuple[str, ...]:
        return tuple(part.strip() for part in str(value).split(",") if part.strip())
    if kind == dict[str, float]:
        return _weights(name, str(value))
    return value


def _weights(name: str, text: str) -> dict[str, float]:
    weights = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        function, _, weight = part.partition("=")
        try:
            weights[function.strip()] = float(weight)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not name=weight, e.g. correct=1.0, format_reward=0.2") from None
    return weights


def _said(value) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(_text(value))


def _text(value):
    """A list or weights as the user types them; other values as they are."""
    if isinstance(value, dict):
        return ", ".join(f"{name}={weight:g}" for name, weight in value.items())
    if isinstance(value, tuple):
        return ", ".join(value)
    return value
