"""Execute the tutorial notebooks and write them as HTML, for readers without Jupyter.

    python tools/render_notebooks.py                       # every notebooks/*.ipynb -> build/notebooks/*.html
    python tools/render_notebooks.py notebooks/02-block-stream.ipynb --out /tmp/html

Each notebook runs top to bottom in a fresh ``python3`` kernel of this interpreter, in ``notebooks/``, against
a real QEMU (KVM when usable; set ``QBLOCKNB_ACCEL=tcg`` to render as Binder would). The executed copy is
exported with nbconvert's ``lab`` template, chain diagrams embedded as SVG, and ``index.html`` links
them all. A notebook that fails is still written, up to the failing cell, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import html
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 300


def title_of(notebook: nbformat.NotebookNode, fallback: str) -> str:
    """The first Markdown heading, which is how each notebook names itself."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return fallback


def execute(path: Path) -> tuple[nbformat.NotebookNode, str | None]:
    """Run a notebook; return it with its outputs and the error that stopped it, if any."""
    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute(env=env, stderr=subprocess.DEVNULL)  # kernel start-up chatter; cell errors still arrive
    except CellExecutionError as error:
        return notebook, str(error).splitlines()[-1] if str(error) else type(error).__name__
    return notebook, None


def write_index(out: Path, rendered: list[tuple[str, str, str | None]]) -> Path:
    """A plain page linking every rendered notebook, failures marked."""
    items = "\n".join(
        f'<li><a href="{html.escape(name)}">{html.escape(title)}</a>'
        + (f" — <strong>failed</strong>: {html.escape(error)}" if error else "")
        + "</li>"
        for name, title, error in rendered
    )
    page = out / "index.html"
    page.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>qblocknb notebooks</title></head>\n"
        f"<body><h1>qblocknb notebooks</h1>\n<p>Executed against a real QEMU on {time.strftime('%Y-%m-%d')}.</p>\n"
        f"<ul>\n{items}\n</ul></body></html>\n"
    )
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="notebooks to render (default: notebooks/*.ipynb)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "notebooks", help="output folder")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    args.out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    rendered = []
    for path in paths:
        started = time.monotonic()
        notebook, error = execute(path.resolve())
        body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": path.stem}})
        target = args.out / f"{path.stem}.html"
        target.write_text(body, encoding="utf-8")
        verdict = f"FAILED: {error}" if error else "ok"
        print(f"{path.name}: {verdict} ({time.monotonic() - started:.1f} s) -> {target}")
        rendered.append((target.name, title_of(notebook, path.stem), error))
    print(f"index: {write_index(args.out, rendered)}")
    return 1 if any(error for _, _, error in rendered) else 0


if __name__ == "__main__":
    sys.exit(main())
