"""The layers hold: imports point down only, the engine imports no UI, and the math imports torch only.

The package is laid out by layer, top to bottom: the CLI (whose `app` command starts the UI), ui,
integrations, engine, then rewards and store side by side; config, events and commands sit under
all of them. plots (plotly figures for the app and notebooks) imports nothing of the workbench and
only the UI imports it. Imports are read from the source, those inside functions too, so a lazy
import is caught as well.
"""

import ast
from pathlib import Path

import workbench
from workbench.rewards.tasks import SAMPLE_TASKS

PACKAGE = Path(workbench.__file__).parent
# top to bottom; a layer may import the layers below it and the foundation, never one above or beside it
LAYERS = [
    ("workbench.__main__",),
    ("workbench.cli",),  # its `app` command starts the UI
    ("workbench.ui",),
    ("workbench.integrations",),
    ("workbench.engine",),
    ("workbench.rewards", "workbench.store"),
    (
        "workbench.config",
        "workbench.events",
        "workbench.commands",
        "workbench.variants",
        "workbench.formatting",
        "workbench.accounts",
    ),
]
UI = ("gradio", "plotly", "workbench.ui", "workbench.plots")


def imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it (`from workbench import ui` counts as workbench.ui)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(name: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def own_part(name: str) -> str:
    """The part of its layer a module belongs to: workbench.engine.trainer -> workbench.engine."""
    return next(prefix for prefix in LAYERS[layer_of(name)] if name == prefix or name.startswith(prefix + "."))


def upward_imports(path: Path) -> list[str]:
    """What a module imports from a layer above its own, from a part beside it in its layer, or plots
    from outside the UI."""
    own = module_name(path)
    if own == "workbench.plots":
        return sorted(n for n in imported(path) if n.startswith("workbench."))
    level, part = layer_of(own), own_part(own)

    def wrong(name: str) -> bool:
        if name == "workbench.plots" or name.startswith("workbench.plots."):
            return part != "workbench.ui"
        other = layer_of(name)
        if other is None:
            return False
        beside = other == level and own_part(name) != part and level < len(LAYERS) - 1
        return other < level or beside

    return sorted(name for name in imported(path) if name.startswith("workbench.") and wrong(name))


def modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if module_name(p) != "workbench"]


def test_every_module_has_a_layer():
    assert [str(p) for p in modules() if module_name(p) != "workbench.plots" and layer_of(module_name(p)) is None] == []
    assert len(modules()) > 40


def test_imports_point_down_only():
    offending = {module_name(path): upward_imports(path) for path in modules() if upward_imports(path)}
    assert offending == {}


def test_sample_rewards_import_nothing_of_the_workbench():
    """A reward written here runs unchanged in TRL."""
    rewards = list(SAMPLE_TASKS.rglob("*.py"))
    assert len(rewards) >= 8
    assert {str(p): n for p in rewards for n in imported(p) if n.startswith("workbench")} == {}


def test_no_engine_module_imports_the_ui():
    below_the_cli = [p for p in modules() if (layer_of(module_name(p)) or 0) >= 3]
    assert PACKAGE / "engine" / "trainer.py" in below_the_cli
    offending = {
        module_name(path): sorted(n for n in imported(path) if n.startswith(UI))
        for path in below_the_cli
        if any(n.startswith(UI) for n in imported(path))
    }
    assert offending == {}


def test_the_math_imports_torch_only():
    math = PACKAGE / "engine" / "grpo.py"
    assert imported(math) - {"__future__", "__future__.annotations"} == {"torch", "torch.Tensor"}


def test_the_check_sees_a_lazy_import_and_an_upward_one(tmp_path, monkeypatch):
    lazy = tmp_path / "workbench" / "store" / "lazy.py"
    lazy.parent.mkdir(parents=True)
    lazy.write_text("def app():\n    from workbench.ui import build_app\n    from workbench.engine import grpo\n")
    assert {"workbench.ui", "workbench.ui.build_app", "workbench.engine.grpo"} <= imported(lazy)
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path / "workbench")
    assert upward_imports(lazy) == [
        "workbench.engine",
        "workbench.engine.grpo",
        "workbench.ui",
        "workbench.ui.build_app",
    ]


MAX_MODULE_LINES = 400  # a module a reader takes in at once; split by responsibility past it
ENTRY_POINTS = ("workbench.engine.runner", "workbench.engine.sweep", "workbench.cli")  # what starts a run


def test_no_module_is_over_400_lines():
    long = {module_name(p): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_the_loop_reads_on_one_screen():
    """train() is the recipe: a scored batch -> advantages -> update -> record; each variant lives in a piece."""
    tree = ast.parse((PACKAGE / "engine" / "trainer.py").read_text())
    (train,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train"]
    assert train.end_lineno - train.lineno + 1 <= 80
    (loop,) = [node for node in ast.walk(train) if isinstance(node, ast.For)]
    assert loop.end_lineno - loop.lineno + 1 <= 10
    called = {node.func.id for node in ast.walk(loop) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert {"scored_batches", "estimate_advantages", "update_policy"} <= called


def test_only_the_entry_points_import_the_loop():
    """dry-run, the lab and the TRL bridge use the loop's pieces, never the loop module."""
    importers = {
        module_name(p)
        for p in modules()
        if any(n == "workbench.engine.trainer" or n.startswith("workbench.engine.trainer.") for n in imported(p))
    }
    assert importers and all(name.startswith(ENTRY_POINTS) for name in importers), importers


def test_every_folder_ships_in_the_wheel():
    """pyproject.toml lists the package's folders (the sample tasks' is mapped in from the top level)."""
    import tomllib

    listed = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = {module_name(p / "__init__.py") for p in PACKAGE.rglob("*") if p.is_dir() and p.name != "__pycache__"}
    tasks = {f"workbench.sample_tasks.{p.name}" for p in SAMPLE_TASKS.iterdir() if p.is_dir()}
    assert set(listed) == {"workbench", "workbench.sample_tasks"} | folders | tasks
