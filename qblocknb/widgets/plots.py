"""Plots of what jobs did: progress against time, throughput, and the states they went through.

``plot_timeline(job)`` (or a list of jobs) draws from ``job.timeline``
through pandas onto a matplotlib ``Figure`` made without pyplot, so a
notebook shows it once and a worker thread may draw it too.  With
``writer=vm.guest.writer_progress`` a panel shows the guest's own writes on the
same time axis, so a job's progress and the guest's activity are seen together.
Each I/O error a job met (``BLOCK_JOB_ERROR``) is a dashed line in the error
colour across the panels, named on the progress panel (``write error, stopped``)::

    >>> figure = plot_timeline([])
    >>> [axes.get_ylabel() for axes in figure.axes]
    ['done (%)', 'MiB/s', 'status']
    >>> writes = pd.DataFrame({"t": [0.0, 1.0], "bytes_written": [0, 1 << 20]})
    >>> [axes.get_ylabel() for axes in plot_timeline([], writer=writes).axes]
    ['done (%)', 'MiB/s', 'status', 'guest MiB']
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from qblocknb.live.jobs import Job
from qblocknb.model.jobfaults import fault_text
from qblocknb.model.palette import BACKGROUND, ERROR, PURPLE, STATUS_COLOURS

PANELS = ("progress", "throughput", "status")
MiB = 1 << 20


def _jobs(job_or_jobs: Job | Iterable[Job]) -> list[Job]:
    return [job_or_jobs] if isinstance(job_or_jobs, Job) else list(job_or_jobs)


def job_frame(job: Job, origin: float | None = None) -> pd.DataFrame:
    """A job's timeline with seconds from ``origin`` (default: its start), percent done and MiB/s."""
    frame = job.timeline
    shift = 0.0 if origin is None else job.started - origin
    frame["t"] = frame["t"].astype(float) + shift
    offset = pd.to_numeric(frame["offset"], errors="coerce").ffill()
    length = pd.to_numeric(frame["len"], errors="coerce").ffill()
    frame["done %"] = (100 * offset / length.where(length > 0)).clip(upper=100)
    frame["MiB/s"] = _rate(frame["t"], offset) / MiB
    return frame


def _rate(seconds: pd.Series, offset: pd.Series, window: str = "500ms") -> pd.Series:
    """Bytes per second over the last ``window``: QEMU copies in bursts, so sample-to-sample rates spike."""
    if seconds.empty:
        return pd.Series(dtype=float)
    index = pd.to_timedelta(seconds.to_numpy(), unit="s")
    t = pd.Series(seconds.to_numpy(), index=index)
    done = pd.Series(offset.to_numpy(dtype=float), index=index)
    elapsed = (t - t.rolling(window).min()).to_numpy()
    copied = (done - done.rolling(window).min()).to_numpy()
    rate = pd.Series(copied, index=seconds.index).div(pd.Series(elapsed, index=seconds.index).where(elapsed > 0))
    return rate.fillna(0.0)


def status_runs(frame: pd.DataFrame) -> list[tuple[str, float, float]]:
    """Consecutive samples with the same status as ``(status, start, end)``."""
    runs: list[tuple[str, float, float]] = []
    for status, t in zip(frame["status"], frame["t"], strict=True):
        if runs and runs[-1][0] == status:
            runs[-1] = (status, runs[-1][1], t)
        else:
            if runs:
                runs[-1] = (runs[-1][0], runs[-1][1], t)
            runs.append((status, t, t))
    return runs


def plot_timeline(
    job_or_jobs: Job | Iterable[Job],
    panels: Sequence[str] = PANELS,
    figsize: tuple[float, float] | None = None,
    writer: pd.DataFrame | None = None,
) -> Figure:
    """Progress (%), throughput (MiB/s) and status bands of one or more jobs against seconds since the first start.

    ``writer``: a guest writer's progress (``t`` in seconds since the epoch, ``bytes_written``), drawn as one
    more panel on the same axis.
    """
    jobs = _jobs(job_or_jobs)
    origin = min((job.started for job in jobs), default=0.0)
    frames = {job.id: job_frame(job, origin) for job in jobs}
    panels = [*panels, *(["guest"] if writer is not None else [])]
    heights = {"progress": 3, "throughput": 2, "status": max(1, len(jobs)) * 0.6, "guest": 2}
    figure = Figure(figsize=figsize or (8, 1.2 + 1.1 * sum(heights[p] for p in panels)), layout="constrained")
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False, height_ratios=[heights[p] for p in panels])
    wall_origin = min((job.started_at for job in jobs), default=0.0)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "guest":
            _guest(ax, writer, wall_origin)
        else:
            {"progress": _progress, "throughput": _throughput, "status": _status}[panel](ax, frames)
    for job in jobs:
        for seconds, text in fault_marks(job, wall_origin):
            for ax in axes[:, 0]:
                ax.axvline(seconds, color=ERROR, linestyle="--", linewidth=1)
            axes[0, 0].annotate(text, (seconds, 0.95), xycoords=("data", "axes fraction"), color=ERROR, fontsize=8)
    axes[-1, 0].set_xlabel("seconds since start")
    return figure


def fault_marks(job: Job, wall_origin: float) -> list[tuple[float, str]]:
    """Each ``BLOCK_JOB_ERROR`` of a job as (seconds on the plot's axis, ``write error, stopped``).

    QEMU stamps events with this host's wall clock, as ``job.started_at`` is, so both share the axis.
    """
    events = job.events
    errors = events[events["event"] == "BLOCK_JOB_ERROR"]
    return [
        (time.timestamp() - wall_origin, fault_text(operation, action))
        for time, operation, action in zip(errors["time"], errors["operation"], errors["action"], strict=True)
    ]


def _guest(ax, writer: pd.DataFrame, wall_origin: float) -> None:
    """The guest's cumulative writes, on the jobs' time axis (both clocks are this host's wall clock)."""
    if not writer.empty:
        seconds = writer["t"].astype(float) - (wall_origin or float(writer["t"].iloc[0]))
        ax.step(seconds, writer["bytes_written"] / MiB, where="post", color=PURPLE, label="guest writes")
    ax.set_ylabel("guest MiB")
    ax.set_ylim(bottom=0)


def _progress(ax, frames: dict[str, pd.DataFrame]) -> None:
    for job_id, frame in frames.items():
        if not frame.empty:
            frame.plot(x="t", y="done %", ax=ax, label=job_id, drawstyle="steps-post")
    ax.set_ylabel("done (%)")
    ax.set_ylim(0, 105)
    if len(frames) == 1:  # one job: its states as bands behind the curve
        for status, start, end in status_runs(next(iter(frames.values()))):
            ax.axvspan(start, end, color=STATUS_COLOURS.get(status, BACKGROUND), alpha=0.25, linewidth=0)
    _legend(ax, frames)


def _throughput(ax, frames: dict[str, pd.DataFrame]) -> None:
    for job_id, frame in frames.items():
        if not frame.empty:
            frame.plot(x="t", y="MiB/s", ax=ax, label=job_id)
    ax.set_ylabel("MiB/s")
    ax.set_ylim(bottom=0)
    _legend(ax, frames)


def _status(ax, frames: dict[str, pd.DataFrame]) -> None:
    seen: dict[str, str] = {}
    for row, frame in enumerate(frames.values()):
        runs = status_runs(frame) if not frame.empty else []
        bars = [(start, max(end - start, 1e-3)) for _, start, end in runs]
        colours = [STATUS_COLOURS.get(status, BACKGROUND) for status, _, _ in runs]
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=colours)
        seen.update({status: STATUS_COLOURS.get(status, BACKGROUND) for status, start, end in runs if end > start})
    ax.set_yticks(range(len(frames)), list(frames))
    ax.set_ylim(-0.6, max(len(frames), 1) - 0.4)
    ax.set_ylabel("status")
    if seen:
        handles = [Patch(color=colour, label=status) for status, colour in seen.items()]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)


def _legend(ax, frames: dict[str, pd.DataFrame]) -> None:
    if ax.get_legend() is not None and len(frames) <= 1:
        ax.get_legend().remove()


def figure_png(figure: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes, for an ``ipywidgets.Image`` or a file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
