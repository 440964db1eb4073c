"""Graphviz HTML-like labels for images, retired images and job arrows.

Everything that comes from QEMU is escaped, so a file name such as
``nbd:localhost:10809:exportname=x`` or ``json:{...}`` can never break the diagram::

    >>> from qblocknb.model.chain import Image
    >>> label = image_label(Image("b.qcow2", "qcow2", 64 << 20, 1 << 20, node_name="node-B"))
    >>> all(line in label for line in ("b.qcow2", "node-B · qcow2", "64 MiB virtual", "1 MiB allocated"))
    True
    >>> job_caption(JobInfo("job0", "stream", "running", 1 << 20, 4 << 20))
    'job0 · stream · running · 25%'

A job that met an I/O error says so first, in the palette's error colour (``job_colour``); on the
diagram's arrow the error has a line of its own::

    >>> from qblocknb.model.jobfaults import FaultedJobInfo
    >>> stopped = FaultedJobInfo("job0", "mirror", "paused", 1 << 20, 4 << 20, fault="write error, stopped")
    >>> job_caption(stopped)
    'job0: write error, stopped · mirror · paused · 25%'
    >>> print(arrow_label(stopped))
    job0: write error, stopped
    mirror · paused · 25%

A job target is labelled by the state of the job that writes it, never "not
opened yet" once the job exists::

    >>> target_text(JobInfo("job0", "mirror", "running", target="nbd:localhost:10809:exportname=disk"))
    'target of job0, written by the mirror'
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from qblocknb.model.chain import Bitmap, Image, JobInfo, RetiredImage, display_name
from qblocknb.model.palette import ERROR, ORANGE
from qblocknb.model.predict import PREVIEW_STATUS
from qblocknb.model.sizes import human_size
from qblocknb.render import style

SCRATCH = "point-in-time scratch"  # a fleecing's scratch image: old data, or the job's start, for an export

# What a target is to the job writing it, by the job's status.
TARGET_STATES = {
    "created": "opened by the {type}",
    "running": "written by the {type}",
    "standby": "written by the {type}",
    "ready": "kept in step by the {type} (ready)",
    "paused": "written by the {type}, now paused",
    "waiting": "written by the {type}, now finishing",
    "pending": "written by the {type}, now finishing",
    "aborting": "written by the {type}, now stopping",
    "concluded": "written by the {type}, which has ended",
}


def _row(text: str, size: int = 11, colour: str | None = None, bold: bool = False) -> str:
    body = escape(text)
    if bold:
        body = f"<B>{body}</B>"
    colour_attr = f' COLOR="{colour}"' if colour else ""
    return f'<TR><TD><FONT POINT-SIZE="{size}"{colour_attr}>{body}</FONT></TD></TR>'


def sizes_known(image: Image) -> bool:
    """False for a placeholder: a name QEMU has no node for (yet), such as an ``nbd:`` target."""
    return bool(image.virtual_size) or image.allocated_size is not None


def sizes_lines(image: Image) -> list[str]:
    """``['64 MiB virtual', '1.25 MiB allocated']`` (``?`` when QEMU did not say)."""
    if not sizes_known(image):
        return ["not opened yet"]
    virtual = human_size(image.virtual_size) if image.virtual_size else "?"
    allocated = human_size(image.allocated_size) if image.allocated_size is not None else "?"
    return [f"{virtual} virtual", f"{allocated} allocated"]


def sizes_text(image: Image) -> str:
    """``64 MiB virtual · 1.25 MiB allocated``: the sizes on one line, as the text view prints them."""
    return " · ".join(sizes_lines(image))


def details_text(image: Image) -> str:
    """``node-B · qcow2``: the node name (when someone gave one; not QEMU's own ``#block123``) and the format."""
    name = None if image.automatic else image.node_name
    return " · ".join(part for part in (name, image.format if image.format != "?" else None) if part)


def bitmap_text(bitmap: Bitmap) -> str:
    """``bm0 · 64 KiB dirty`` plus ``disabled``/``busy``/``persistent`` when they apply."""
    flags = [name for name, on in (("disabled", not bitmap.recording), ("busy", bitmap.busy)) if on]
    flags += ["persistent"] if bitmap.persistent else []
    return " · ".join([bitmap.name or "(anonymous)", f"{human_size(bitmap.dirty_bytes)} dirty", *flags])


def _badges(bitmaps: Sequence[Bitmap]) -> str:
    cells = "".join(
        f'<TD BGCOLOR="{style.BITMAP_FILL}" STYLE="rounded" BORDER="1" COLOR="{style.BITMAP_BORDER}">'
        f'<FONT POINT-SIZE="9">⚑ {escape(bitmap_text(b))}</FONT></TD>'
        for b in bitmaps
    )
    return f'<TR><TD><TABLE BORDER="0" CELLSPACING="3" CELLPADDING="2"><TR>{cells}</TR></TABLE></TD></TR>'


def image_label(
    image: Image,
    tags: Sequence[tuple[str, str]] = (),
    note: tuple[str, str] | None = None,
    muted: bool = False,
    sizes: bool = True,
) -> str:
    """A node label: basename, node name and format, sizes, then tags (text, colour), bitmaps and a note."""
    ink = style.MUTED if muted else None
    rows = [_row(image.name, 12, ink, bold=True)]
    if details_text(image):
        rows.append(_row(details_text(image), 10, ink))
    if sizes:  # one line each: on one line they made every box, and the seed's row, wider than a notebook cell
        rows += [_row(line, 9, style.MUTED) for line in sizes_lines(image)]
    rows += [_row(text, 10, colour, bold=True) for text, colour in tags]
    if image.bitmaps:
        rows.append(_badges(image.bitmaps))
    if note:
        rows.append(_row(note[0], 10, note[1], bold=True))
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{"".join(rows)}</TABLE>>'


def writers(image: Image, jobs: Sequence[JobInfo]) -> list[JobInfo]:
    """The started jobs that write into ``image`` (a preview's job has not opened anything yet)."""
    names = image.names
    return [
        job
        for job in jobs
        if job.target and job.status != PREVIEW_STATUS and names & {job.target, display_name(job.target)}
    ]


def target_text(job: JobInfo) -> str:
    """What the target is to ``job``, by its status: ``target of job0, written by the mirror``."""
    state = TARGET_STATES.get(job.status, "{type} " + job.status)
    return f"target of {job.id}, {state.format(type=job.type)}"


def target_label(image: Image, jobs: Sequence[JobInfo], scratch: bool = False) -> str:
    """A target outside the chain: sizes when QEMU gave them, and which job writes it in which state; a
    ``scratch`` target (a fleecing's, backed by the chain) is called the point-in-time scratch."""
    writing = writers(image, jobs)
    tags = [("outside the chain", style.MUTED)] + [(target_text(job), style.job_colour(job.type)) for job in writing]
    tags += [(SCRATCH, ORANGE)] if scratch else []
    return image_label(image, tags, sizes=sizes_known(image) or not writing)


def retired_label(retired: RetiredImage, colour: str) -> str:
    """A greyed label with the seed's rule: still valid after stream, invalid after commit."""
    rows = [
        _row(retired.name, 12, style.MUTED, bold=True),
        _row(" · ".join(p for p in (retired.node_name, f"left by {retired.left_by}") if p), 10, style.MUTED),
        _row(retired.note, 10, colour, bold=True),
    ]
    return f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">{"".join(rows)}</TABLE>>'


def job_fault(job: JobInfo) -> str | None:
    """The I/O error a job met (``write error, stopped``), when the job carries one."""
    return getattr(job, "fault", None)


def job_colour(job: JobInfo) -> str:
    """The colour of a job's arrow: its type's, or the error colour once it met an I/O error."""
    return ERROR if job_fault(job) else style.job_colour(job.type)


def _progress_text(job: JobInfo) -> str:
    """``commit · running · 42%``."""
    parts = [job.type, job.status]
    if job.length:
        parts.append(f"{job.offset / job.length:.0%}")
    return " · ".join(parts)


def job_caption(job: JobInfo) -> str:
    """``job0 · commit · running · 42%``: a job in one line; an I/O error it met comes first."""
    fault = job_fault(job)
    return f"{job.id}: {fault} · {_progress_text(job)}" if fault else f"{job.id} · {_progress_text(job)}"


def arrow_label(job: JobInfo) -> str:
    """What a job's arrow says: its caption, with an I/O error on a line of its own."""
    fault = job_fault(job)
    return f"{job.id}: {fault}\n{_progress_text(job)}" if fault else job_caption(job)


def flow_text(job: JobInfo) -> str:
    """Which way data flows, in words: ``node-C → node-D``."""
    source = display_name(job.source) if job.source else "?"
    target = display_name(job.target) if job.target else "?"
    return f"{source} → {target}"
