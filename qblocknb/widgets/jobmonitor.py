"""``JobMonitor(job)``: a job's progress, rate and verbs, live.

The monitor listens to the job (on the event thread) and only sets traits
there: the bar, the texts, which buttons are enabled.  The progress plot is
drawn by matplotlib on the monitor's own thread; until its first drawing a
line of text stands in its place (an empty image shows as a broken icon).
A button is enabled only in the states where QEMU accepts its verb
(``qblocknb.model.vocabulary.VERB_STATES``); a disabled one loses its colour, so that it
does not look clickable.  A job that met an I/O error gets a red line naming
the operation, QEMU's action and ``io-status``; when QEMU paused it for that
error (policy ``stop``), Resume is enabled: press it once the fault is fixed.

``JobMonitor(job, writer=vm.guest)`` also plots the guest's own writes (its
writer's ``bytes_written``) under the job's progress, on the same time axis; a
``writer`` may be a ``Guest``, a frame like ``guest.writer_progress``, or a
function returning one.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from html import escape
from typing import Any

import ipywidgets as widgets
import pandas as pd

from qblocknb.errors import Error
from qblocknb.live.jobs import Job
from qblocknb.model.palette import ERROR, GREY, INK, OUTCOME_COLOURS
from qblocknb.model.sizes import human_size
from qblocknb.model.vocabulary import VERB_STATES
from qblocknb.widgets.backlog import backlog_html
from qblocknb.widgets.html import error_html, note_html
from qblocknb.widgets.plots import figure_png, plot_timeline
from qblocknb.widgets.refresher import Refresher

VERBS = ("complete", "cancel", "pause", "resume")
SPEEDS = (64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20)
BUTTON_STYLES = {"complete": "success", "cancel": "warning"}  # while enabled; a disabled button is plain
RATE_WINDOW = 1.5
MIN_UPDATE = 0.1
# What QEMU's job statuses mean to a reader; QEMU's own word stays beside it.  A finished job is "null",
# which alone in bold reads as a bug.  running, paused and ready say what they mean already.
STATUS_MEANINGS = {
    "undefined": "not known yet",
    "created": "starting",
    "standby": "ready · paused",
    "waiting": "finishing · waiting for the other jobs of its transaction",
    "pending": "finishing · changes to the graph still to make",
    "aborting": "stopping after an error or a cancel",
    "concluded": "ended · waiting to be dismissed",
    "null": "ended · dismissed",
}


def speed_options(current: int) -> list[tuple[str, int]]:
    """The slider's stops, slow to fast, then unlimited; the job's own speed is always one of them."""
    speeds = sorted(set(SPEEDS) | ({current} if current else set()))
    return [(f"{human_size(n)}/s", n) for n in speeds] + [("unlimited", 0)]


def allowed_verbs(job: Job) -> dict[str, bool]:
    """Which buttons QEMU would accept now; pause/resume also follow whether the user paused the job; none once
    its QEMU is gone."""
    if job.gone():
        return dict.fromkeys((*VERBS, "set-speed"), False)
    status = job.status
    return {
        "complete": status in VERB_STATES["complete"],
        "cancel": status in VERB_STATES["cancel"],
        "pause": status in VERB_STATES["pause"] and not (job.user_paused or job.stopped_on_error),
        "resume": status in VERB_STATES["resume"] and (job.user_paused or job.stopped_on_error),
        "set-speed": status in VERB_STATES["set-speed"],
    }


def status_html(status: str) -> str:
    """The status as a reader says it, in bold, with QEMU's own word after it in small print."""
    meaning = STATUS_MEANINGS.get(status)
    if meaning is None:
        return f"<b>{escape(status)}</b>"
    return f'<b>{escape(meaning)}</b> <small style="color:{GREY}">(QEMU: {escape(status)})</small>'


def fault_html(job: Job) -> str:
    """A red line for the I/O error the job met: operation, action, io-status, and what to do; else nothing."""
    if not job.io_error:
        return ""
    parts = [f"{job.id}: {job.io_error}"]
    if job.io_status != "ok":
        parts.append(f"io-status {job.io_status}")
    if job.stopped_on_error:
        parts.append("paused by QEMU: fix the fault, then press Resume")
    return f'<span style="color:{ERROR}">⚠ {escape(" · ".join(parts))}</span>'


def writer_source(writer: Any) -> Callable[[], pd.DataFrame] | None:
    """A function returning the guest writer's progress frame, from a Guest, a frame or such a function."""
    if writer is None:
        return None
    if isinstance(writer, pd.DataFrame):
        return lambda: writer
    if hasattr(writer, "writer_progress"):  # a qblocknb.live.guest.Guest: read afresh at each drawing
        return lambda: writer.writer_progress
    if callable(writer):
        return writer
    raise TypeError(f"writer must be a Guest, a DataFrame or a function returning one, not {type(writer).__name__}")


class JobMonitor(widgets.VBox):
    """Progress bar, status, bytes, rate, speed slider, verb buttons and a live progress plot of one job.

    With ``writer`` (a ``Guest``, its ``writer_progress`` frame, or a function returning that frame) the plot
    has a third panel: the guest's writes on the job's time axis.
    """

    def __init__(self, job: Job, plot: bool = True, plot_interval: float = 1.0, writer: Any = None) -> None:
        self.job = job
        self.writer = writer_source(writer)
        flow = f"{job.source or '?'} → {job.target or '?'}"
        self.title = widgets.HTML(f"<b>{escape(job.id)}</b> · {escape(job.type)} ({escape(job.command)}) · {flow}")
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="320px"))
        self.status = widgets.HTML()
        self.fault = widgets.HTML()
        self.numbers = widgets.HTML()
        self.backlog = widgets.HTML()  # a mirror's dirty backlog and its trend (qblocknb.widgets.backlog)
        self.speed = widgets.SelectionSlider(
            options=speed_options(job.speed),
            value=job.speed,
            description="speed limit",
            continuous_update=False,
            style={"description_width": "initial"},
        )
        self.buttons = {verb: widgets.Button(description=verb.title(), layout={"width": "90px"}) for verb in VERBS}
        self.error = widgets.HTML()
        self.plot = widgets.Image(format="png", layout={"max_width": "640px", "display": "none"})
        self.plot_note = widgets.HTML(note_html("the progress plot appears here once the job has been sampled"))
        self._rates: deque[tuple[float, int]] = deque()
        self._last_update = 0.0
        self._last_status = ""
        self._quiet = False
        self._lock = threading.Lock()
        for verb, button in self.buttons.items():
            button.on_click(lambda _button, verb=verb: self.press(verb))
        self.speed.observe(self._speed_changed, "value")
        children = [
            self.title,
            widgets.HBox([self.bar, self.status]),
            self.fault,
            self.numbers,
            self.backlog,
            widgets.HBox([*self.buttons.values(), self.speed]),
            self.error,
        ]
        super().__init__(children + ([self.plot_note, self.plot] if plot else []))
        self.add_class("qb-job-monitor")
        self._subscription = job.listeners.register(self._on_job)
        self.update()
        self._plotter = (
            Refresher(
                self.draw_plot,
                signature=self._plot_signature,
                finished=lambda: job.ended or job.gone(),
                interval=plot_interval,
                gap=plot_interval,
                name=f"qblocknb-plot-{job.id}",
            )
            if plot
            else None
        )

    # -- state -> traits --------------------------------------------------------------------
    def update(self) -> None:
        """Set every trait from the job's state; cheap, safe on any thread."""
        job = self.job
        with self._lock:
            now = time.monotonic()
            self._rates.append((now, job.offset))
            while len(self._rates) > 2 and now - self._rates[0][0] > RATE_WINDOW:
                self._rates.popleft()
            self._last_update, self._last_status = now, job.status
            self.bar.value = job.progress
            self.bar.bar_style = {"completed": "success", "cancelled": "warning", "failed": "danger"}.get(
                job.outcome or "", "info" if job.status == "ready" else ""
            )
            self.status.value = self._status_html()
            self.fault.value = fault_html(job)
            self.numbers.value = self._numbers_html()
            self.backlog.value = backlog_html(job)
            allowed = allowed_verbs(job)
            for verb, button in self.buttons.items():
                button.disabled = not allowed[verb]
                button.button_style = BUTTON_STYLES.get(verb, "") if allowed[verb] else ""
            self.speed.disabled = not allowed["set-speed"]
            if job.speed != self.speed.value:  # changed from the notebook with job.set_speed()
                self._quiet = True
                try:
                    self.speed.options = speed_options(job.speed)
                    self.speed.value = job.speed
                finally:
                    self._quiet = False

    def _status_html(self) -> str:
        job = self.job
        text = f"{status_html(job.status)} · {job.progress:.0%}"
        if job.status == "ready":
            text += " · waiting for Complete (pivot) or Cancel"
        if job.outcome:
            colour = OUTCOME_COLOURS.get(job.outcome, INK)
            text += f' · <span style="color:{colour}">{escape(job.outcome)}</span>'
        return text

    def _numbers_html(self) -> str:
        job = self.job
        parts = [f"{human_size(job.offset)} of {human_size(job.length)}"]
        (t0, first), (t1, last) = self._rates[0], self._rates[-1]
        if not job.ended and t1 > t0:
            parts.append(f"{human_size(max(last - first, 0) / (t1 - t0))}/s")
        parts.append(f"limit {human_size(job.speed)}/s" if job.speed else "no speed limit")
        if job.error:
            parts.append(f'<span style="color:{ERROR}">{escape(job.error)}</span>')
        return " · ".join(parts)

    def _on_job(self, job: Job) -> None:
        """On the event thread: throttle progress samples, never drop a status change."""
        if job.status == self._last_status and time.monotonic() - self._last_update < MIN_UPDATE:
            return
        self.update()

    def _plot_signature(self) -> tuple:
        """What changes the plot: the job's state, and with a writer the guest's writes (also while READY)."""
        job = self.job
        writes = len(self.writer()) if self.writer is not None else 0
        return (job.status, job.offset, job.length, writes)

    def figure(self):
        """The progress plot as a matplotlib Figure: progress and throughput, and the guest's writes if given."""
        if self.writer is None:
            return plot_timeline(self.job, panels=("progress", "throughput"), figsize=(6.4, 2.8))
        return plot_timeline(self.job, panels=("progress", "throughput"), figsize=(6.4, 3.8), writer=self.writer())

    def draw_plot(self) -> None:
        """Draw the progress plot now (the monitor's thread does so about once a second) and show it."""
        figure = self.figure()
        self.plot.value = figure_png(figure, dpi=72)
        self.plot.layout.display = None
        self.plot_note.layout.display = "none"

    # -- user -> QEMU ----------------------------------------------------------------------
    def press(self, verb: str) -> None:
        """What a button does; refused verbs show a sentence and send nothing.

        Cancel on a paused job (by you, or by QEMU on an I/O error) is forced: QEMU refuses it otherwise.
        """
        job = self.job
        forced = verb == "cancel" and (job.user_paused or job.stopped_on_error)
        try:
            if forced:
                job.cancel(force=True)
            else:
                getattr(job, verb)()
        except Error as error:
            self.error.value = error_html(error)
        else:
            self.error.value = note_html(f"{verb} sent")
        self.update()

    def _speed_changed(self, change: dict) -> None:
        if self._quiet:
            return
        try:
            self.job.set_speed(change["new"])
        except Error as error:
            self.error.value = error_html(error)
        self.update()

    def close(self) -> None:
        self._subscription.remove()
        if self._plotter is not None:
            self._plotter.close()
        super().close()
