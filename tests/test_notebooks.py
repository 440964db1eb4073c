"""The tutorial notebooks run top to bottom against a real QEMU, as they would on Binder.

Each notebook in ``notebooks/`` is executed once, in a fresh kernel started from this interpreter, with
``QBLOCKNB_ACCEL=tcg`` (Binder has no KVM). While it runs, a sampler adds up the resident memory of the
kernel and of every process under it (the QEMUs, qemu-img, qemu-io); the peak must stay under 1 GB, the
smallest memory a Binder user gets. Any cell error fails the test, and so does a QEMU left running.
Notebooks are committed without outputs, so their diffs stay readable.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import nbformat
import pytest
from conftest import qemu_pids_under
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MEMORY_LIMIT = 1 << 30
CELL_TIMEOUT = 240
PAGE = os.sysconf("SC_PAGE_SIZE")


def process_tree_rss(root: int) -> int:
    """Resident bytes of every process below ``root`` (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue  # the process ended between the scan and the read
        todo.extend(children.get(pid, []))
    return total


class PeakMemory(threading.Thread):
    """Samples the memory of this process's descendants until stopped; keeps the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, process_tree_rss(os.getpid()))
            self._stop_event.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_event.set()
        self.join()


def kernel_env(scratch: Path) -> dict[str, str]:
    """The kernel's environment: TCG like Binder, scratch labs under ``scratch``, this venv first on PATH.

    ``QBLOCKNB_NOTEBOOK_ACCEL=`` (empty) leaves the choice to the toolkit, as ``tools/binder-like.sh`` does
    for a user who cannot open /dev/kvm.
    """
    env = dict(os.environ)
    env["QBLOCKNB_ACCEL"] = os.environ.get("QBLOCKNB_NOTEBOOK_ACCEL", "tcg")
    env["TMPDIR"] = str(scratch)  # qb.Lab() folders land here, where the leak checks look
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def execute(notebook: nbformat.NotebookNode, scratch: Path) -> nbformat.NotebookNode:
    """Run every cell in a fresh python3 kernel; raises CellExecutionError on the first failing cell."""
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute(env=kernel_env(scratch))
    return notebook


def stream_text(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.get("outputs", []) if output.output_type == "stream")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


def test_notebooks_are_committed_without_outputs():
    dirty = []
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for number, cell in enumerate(notebook.cells):
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
                dirty.append(f"{path.name} cell {number}")
        if notebook.metadata.get("kernelspec", {}).get("name") != "python3":
            dirty.append(f"{path.name}: kernelspec is not python3")
    assert not dirty, "clear outputs and execution counts before committing: " + ", ".join(dirty)


@pytest.mark.notebooks
def test_kernel_runs_this_interpreter_this_checkout_and_tcg(tmp_path):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("import sys, qblocknb\nprint(sys.executable)\nprint(qblocknb.__file__)"),
        nbformat.v4.new_code_cell(
            "lab = qblocknb.Lab()\nlab.create('x.qcow2', size='1M')\n"
            "print(lab.launch('x.qcow2').execute('query-kvm')['enabled'])\nlab.close()"
        ),
    ]
    executed = execute(notebook, tmp_path)
    executable, package = stream_text(executed.cells[0]).split()
    assert Path(executable).resolve() == Path(sys.executable).resolve()
    assert Path(package).resolve().is_relative_to(ROOT)
    assert stream_text(executed.cells[1]).strip() == "False", "the kernel's QEMUs must run without KVM, as on Binder"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_under_tcg_within_1gb(path: Path, tmp_path: Path, record_property):
    notebook = nbformat.read(path, as_version=4)
    with PeakMemory() as memory:
        execute(notebook, tmp_path)
    record_property("peak_memory_mb", round(memory.peak / 2**20))
    print(f"{path.name}: peak memory of kernel and QEMUs {memory.peak / 2**20:.0f} MiB")
    assert memory.peak > 0, "the memory sampler saw no kernel"
    assert memory.peak < MEMORY_LIMIT, f"{path.name} peaked at {memory.peak / 2**20:.0f} MiB, over 1 GiB"
    leftover = qemu_pids_under(tmp_path)
    assert not leftover, f"{path.name} left QEMU running: pids {leftover}; end it with lab.close()"
