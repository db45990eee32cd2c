"""The notebooks: they run top to bottom in a fresh kernel, draw, clean up, and use the public API.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (the venv's ipykernel), from
a copy in a temporary directory: the committed files, which carry their outputs, are never
rewritten here (``notebooks/execute.py`` does that).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

import rxsinks
import rxsinks.viz

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 120

# Run after the notebook's own cells: collect garbage so that anything left open (a client
# session, a server, a pending task) reports itself now, on the kernel's stderr.
FINAL_CHECK = """\
import gc
gc.collect()
"""
# ResourceWarning is hidden by default; show it so that an unclosed resource is seen.
FIRST_CELL = """\
import warnings
warnings.simplefilter("always", ResourceWarning)
"""
LEAK_MARKERS = (
    "ResourceWarning",
    "Unclosed",
    "unclosed",
    "Task was destroyed",
    "was never awaited",
    "Traceback",
    "Exception ignored",
)


def read_notebook(path: Path) -> nbformat.NotebookNode:
    # nbformat has no type hints
    notebook: nbformat.NotebookNode = nbformat.read(  # type: ignore[no-untyped-call]
        path, as_version=4
    )
    return notebook


def code_cell(source: str) -> nbformat.NotebookNode:
    cell: nbformat.NotebookNode = new_code_cell(source)  # type: ignore[no-untyped-call]
    return cell


def code_of(notebook: nbformat.NotebookNode) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def images_in(notebook: nbformat.NotebookNode) -> int:
    return sum(
        1
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    )


def test_the_three_notebooks_are_there() -> None:
    assert [path.name for path in NOTEBOOKS] == [
        "01-quickstart.ipynb",
        "02-outage-and-recovery.ipynb",
        "03-registry-events.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_with_its_outputs(path: Path) -> None:
    notebook = read_notebook(path)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code_cells), "run notebooks/execute.py"
    assert [cell.execution_count for cell in code_cells] == list(range(1, len(code_cells) + 1))
    assert images_in(notebook) >= 1
    assert not [
        output for cell in code_cells for output in cell.outputs if output.output_type == "error"
    ]
    assert any(cell.cell_type == "markdown" for cell in notebook.cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_uses_only_the_public_api_and_top_level_await(path: Path) -> None:
    code = code_of(read_notebook(path))
    assert "await " in code
    # trap 11: asyncio.run() fails in a running kernel, Observable.run() deadlocks it
    assert "asyncio.run(" not in code
    assert ".run()" not in code
    assert not re.search(r"\brxsinks\._[a-z]|from \._", code), "private rxsinks modules"
    public = set(rxsinks.__all__) | {"__version__", "viz"}
    used = set(re.findall(r"\brxsinks\.(\w+)", code))
    assert used <= public, used - public
    for names in re.findall(r"from rxsinks\.viz import ([\w, ]+)", code):
        assert {name.strip() for name in names.split(",")} <= set(rxsinks.viz.__all__)
    for names in re.findall(r"from rxsinks import ([\w, ]+)", code):
        assert {name.strip() for name in names.split(",")} <= public
    # pandas is not a dependency
    assert "pandas" not in code


def this_python_kernel() -> AsyncKernelManager:
    """A kernel manager for ipykernel's own ``python3`` kernel, run by this very interpreter.

    A ``python3`` kernelspec elsewhere (in ``~/.local/share/jupyter``, say) could point at
    another Python without rxsinks; with no kernel directories, only ipykernel's built-in spec,
    ``[sys.executable, "-m", "ipykernel_launcher", ...]``, is left.
    """
    specs = KernelSpecManager(kernel_dirs=[])
    if "python3" not in specs.find_kernel_specs():
        pytest.fail("ipykernel is not installed: pip install 'rxsinks[notebook]'")
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.timeout(4 * CELL_TIMEOUT)  # a whole notebook, kernel start included
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
async def test_notebook_runs_in_a_fresh_kernel(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    notebook = read_notebook(copy)
    own_cells = len(notebook.cells)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # so that the images counted below are the ones drawn now
    notebook.cells.insert(0, code_cell(FIRST_CELL))
    notebook.cells.append(code_cell(FINAL_CHECK))
    client = NotebookClient(
        notebook,
        km=this_python_kernel(),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # cleanup_kc: shut the kernel down at the end, though we made its manager (nbclient would
    # leave it running). Raises CellExecutionError at the first failing cell.
    await client.async_execute(cleanup_kc=True)

    assert len(notebook.cells) == own_cells + 2
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    assert images_in(notebook) >= 1
    stderr = "".join(
        output.text
        for output in outputs
        if output.output_type == "stream" and output.name == "stderr"
    )
    leaks = [marker for marker in LEAK_MARKERS if marker in stderr]
    assert not leaks, stderr
