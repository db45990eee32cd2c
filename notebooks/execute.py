"""Execute the notebooks in place, so that they are committed with their outputs.

Each notebook runs top to bottom in a fresh ``python3`` kernel (ipykernel, from the ``notebook``
extra) run by the interpreter running this script, with this directory as its working directory;
its outputs, plots included, replace the old ones. A notebook that fails is left untouched and the
script exits with status 1.

Usage::

    python notebooks/execute.py                            # all notebooks in this directory
    python notebooks/execute.py notebooks/01-quickstart.ipynb
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 120
"""Seconds a cell may run."""


def execute(path: Path) -> float:
    """Execute the notebook at ``path`` and save it with its outputs; returns the seconds taken.

    Raises:
        CellExecutionError: a cell raised; the file is left as it was.
    """
    # nbformat has no type hints
    notebook = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps of an earlier run
    client = NotebookClient(
        notebook,
        # ipykernel's built-in python3 kernel, run by this interpreter: a python3 kernelspec
        # elsewhere (~/.local/share/jupyter) could point at a Python without rxsinks
        km=AsyncKernelManager(
            kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
        ),
        timeout=CELL_TIMEOUT,
        record_timing=False,  # no per-cell timestamps: smaller diffs between two runs
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.monotonic()
    # cleanup_kc: shut the kernel down at the end, though we made its manager
    client.execute(cleanup_kc=True)
    elapsed = time.monotonic() - started
    nbformat.validate(notebook)
    nbformat.write(notebook, path)  # type: ignore[no-untyped-call]
    return elapsed


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: all here)")
    arguments = parser.parse_args(argv)
    paths: list[Path] = arguments.notebooks or sorted(HERE.glob("*.ipynb"))
    status = 0
    for path in paths:
        try:
            elapsed = execute(path)
        except CellExecutionError as exc:
            print(f"{path}: FAILED\n{exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: executed in {elapsed:.1f}s")
    return status


if __name__ == "__main__":
    sys.exit(main())
