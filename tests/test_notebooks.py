"""The teaching notebooks: committed without outputs, and each one runs end to end in a fresh kernel.

Each notebook runs in the venv's own kernel (the python3 kernel spec resolves to the interpreter
running the tests), from a temporary directory, with this process's environment (WORKBENCH_CACHE
finds the cached tiny model; TMPDIR points into the test's tmp_path). A cell that raises fails the
test and names the cell.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def test_every_notebook_is_here():
    names = {path.name for path in NOTEBOOKS}
    expected = {
        "01_grpo_by_hand.ipynb",
        "02_quickstart.ipynb",
        "03_rollout_analysis.ipynb",
        "04_reward_prototyping.ipynb",
        "05_grpo_vs_ppo.ipynb",
    }
    assert expected <= names, f"missing from {NOTEBOOK_DIR}: {sorted(expected - names)}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean_and_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    with_outputs = [
        k
        for k, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not with_outputs, f"{path.name}: cells {with_outputs} were committed with outputs; clear them"

    # A first cell reports which interpreter runs the kernel: the venv's, not another python on the PATH.
    notebook.cells.insert(0, nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    resources = {"metadata": {"path": str(tmp_path)}}  # the kernel's working directory
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources)
    # TMPDIR: the workspaces the notebooks make with tempfile.mkdtemp() land in tmp_path, which pytest prunes.
    env = os.environ | {"TMPDIR": str(tmp_path)}
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, when a cell fails

    assert notebook.cells[0].outputs[0].text.strip() == sys.executable
