"""``FleetView(fleet)``: every disk of a fleet as a table to sort and filter, with a live bar per running job.

One row widget per disk: a button (its domain and disk), its cells, and a progress bar that shows while a
block job runs and turns green when it ends.  Clicking a row draws that disk's chain (from libvirt's XML,
no Machine needed) and opens the domain's ``Dashboard``.  The view redraws on libvirt's events: a block-job
event re-reads that domain, a lifecycle event (started, stopped, defined, undefined) its host; between
events only the running jobs are asked for their progress (``blockJobInfo``), never every domain.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from html import escape
from typing import Any, Protocol

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.model.chain import Chain
from qblocknb.model.sizes import human_size
from qblocknb.widgets.dashboard import Dashboard
from qblocknb.widgets.html import diagram_html, error_html
from qblocknb.widgets.refresher import Refresher

SORT_KEYS = ("host", "domain", "state", "depth", "allocated", "job")
CELLS = ("host", "domain", "state", "disk", "depth", "allocated", "checkpoints", "job", "chain")
Key = tuple[str, str, str]  # host, domain, disk


class FleetReads(Protocol):
    """What the view uses of a fleet: its rows, a disk's chain and job, its events, and a domain's Machine."""

    def rows(self, host: str | None = None, name: str | None = None) -> list[dict]: ...

    def chain(self, host: str, name: str, disk: str = "vda") -> Chain: ...

    def job_info(self, host: str, name: str, disk: str) -> dict: ...

    def listen(self, callback: Callable[[str, str, str], None]) -> Any: ...

    def __getitem__(self, key: tuple[str, str]) -> Any: ...


def key_of(row: dict) -> Key:
    return row["host"], row.get("domain") or "", row.get("disk") or ""


class FleetRow(widgets.HBox):
    """One disk: a button that selects it, its cells, and its job's progress bar."""

    def __init__(self, row: dict, on_click: Callable[[Key], None]) -> None:
        self.key = key_of(row)
        self.button = widgets.Button(layout=widgets.Layout(width="220px"))
        self.button.on_click(lambda _button: on_click(self.key))
        self.cells = widgets.HTML()
        self.bar = widgets.FloatProgress(min=0.0, max=1.0, layout=widgets.Layout(width="160px", visibility="hidden"))
        self.had_job = False
        super().__init__([self.button, self.bar, self.cells])
        self.update(row)

    def update(self, row: dict) -> None:
        """Show ``row``; a job that ended since the last row leaves the bar full and green."""
        self.row = row
        host, domain, disk = self.key
        self.button.description = f"{domain} {disk}" if domain else f"{host}: unreachable"
        self.button.disabled = not domain
        if row.get("error"):
            self.cells.value = error_html(row["error"])
            return
        cells = [f"<td style='padding:0 8px'>{escape(_cell(row, name))}</td>" for name in CELLS]
        self.cells.value = f"<table><tr>{''.join(cells)}</tr></table>"
        if row.get("job"):
            self.show_progress(row.get("progress") or 0.0, row["job"])
        elif self.had_job:
            self.bar.value, self.bar.bar_style, self.bar.description = 1.0, "success", "done"

    def show_progress(self, fraction: float, job: str) -> None:
        self.had_job = True
        self.bar.layout.visibility = "visible"
        self.bar.value, self.bar.bar_style, self.bar.description = fraction, "info", job


def _cell(row: dict, name: str) -> str:
    value = row.get(name)
    if name == "allocated" and value is not None:
        return human_size(value)
    return "" if value is None else str(value)


class FleetView(widgets.VBox):
    """The fleet's disks, sortable and filterable; a click shows a disk's chain and its domain's Dashboard."""

    def __init__(self, fleet: FleetReads, interval: float = 0.5, rescan: float = 10.0) -> None:
        self.fleet, self.interval, self.rescan = fleet, interval, rescan
        self.sort = widgets.Dropdown(options=SORT_KEYS, value="host", description="sort by")
        self.descending = widgets.Checkbox(value=False, description="descending", indent=False)
        self.filter = widgets.Text(placeholder="filter: host, domain, state, chain...", description="filter")
        self.status = widgets.HTML()
        self.table = widgets.VBox()
        self.diagram = widgets.HTML()
        self.detail = widgets.VBox([self.diagram])
        self.rows: dict[Key, dict] = {}
        self.row_widgets: dict[Key, FleetRow] = {}
        self.selected: Key | None = None
        self.dashboard: Any = None
        self._dirty: set[tuple[str, str | None]] = {("*", None)}  # (host, domain); a None domain: the whole host
        self._lock = threading.Lock()
        self._closed = threading.Event()
        for control in (self.sort, self.descending, self.filter):
            control.observe(lambda _change: self.draw(), names="value")
        controls = widgets.HBox([self.sort, self.descending, self.filter])
        super().__init__([controls, self.status, self.table, self.detail])
        self.refresher = Refresher(self._reread, interval=interval, name="qblocknb-fleetview")
        self.subscription = fleet.listen(self._on_event)
        self.refresher.poke()
        self._poller = threading.Thread(target=self._poll, name="qblocknb-fleetview-jobs", daemon=True)
        self._poller.start()

    # -- events and reads -------------------------------------------------------------------
    def _on_event(self, host: str, domain: str, what: str) -> None:
        """On libvirt's event thread: remember what to read again, and wake the view's thread."""
        with self._lock:
            self._dirty.add((host, domain if what == "block job" else None))  # ("*", None): every host
        self.refresher.poke()

    def _reread(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        if ("*", None) in dirty:
            self.rows = {key_of(row): row for row in self.fleet.rows()}
        for host, domain in sorted(dirty - {("*", None)}, key=lambda item: (item[0], item[1] or "")):
            fresh = self.fleet.rows(host, domain)
            self.rows = {
                key: row
                for key, row in self.rows.items()
                if key[0] != host or (domain is not None and key[1] not in ("", domain))
            }
            self.rows.update({key_of(row): row for row in fresh})
        self.draw()

    def _poll(self) -> None:
        """Every ``interval``, the progress of the running jobs only; an ended job makes its domain be read again.

        libvirt announces a job's end, never its start: every ``rescan`` seconds the whole fleet is read again,
        so that a job another client started shows too.
        """
        last_scan = time.monotonic()
        while not self._closed.wait(self.interval):
            if time.monotonic() - last_scan > self.rescan:
                last_scan = time.monotonic()
                self._on_event("*", "", "rescan")
            for key, row in list(self.rows.items()):
                if not row.get("job") or key not in self.row_widgets:
                    continue
                try:
                    info = self.fleet.job_info(*key)
                except Exception:  # the host went away: its lifecycle or the next read says so
                    continue
                if info and info.get("end"):
                    self.row_widgets[key].show_progress(info.get("cur", 0) / info["end"], row["job"])
                elif not info:
                    self._on_event(key[0], key[1], "block job")

    # -- drawing ----------------------------------------------------------------------------
    def shown(self) -> list[dict]:
        """The rows the filter lets through, in the chosen order (unreachable hosts first)."""
        needle = self.filter.value.strip().lower()
        rows = [row for row in self.rows.values() if not needle or needle in _text(row)]
        column = self.sort.value
        disks = [row for row in rows if not row.get("error")]
        disks.sort(key=lambda row: _sortable(row.get(column)), reverse=self.descending.value)
        return [row for row in rows if row.get("error")] + disks

    def draw(self) -> None:
        rows = self.shown()
        for row in rows:
            key = key_of(row)
            if key in self.row_widgets:
                self.row_widgets[key].update(row)
            else:
                self.row_widgets[key] = FleetRow(row, self.select)
        self.table.children = tuple(self.row_widgets[key_of(row)] for row in rows)
        errors = sum(bool(row.get("error")) for row in self.rows.values())
        self.status.value = f"{len(rows)} of {len(self.rows) - errors} disks" + (
            f"; {errors} host(s) unreachable" if errors else ""
        )

    def select(self, key: Key) -> None:
        """Draw the disk's chain and open its domain's Dashboard (a sentence instead when it cannot be opened)."""
        host, domain, disk = key
        self.selected = key
        try:
            chain = self.fleet.chain(host, domain, disk)
            self.diagram.value = diagram_html(chain, f"{host}: {domain} {disk}", fit=True)
        except Error as error:
            self.diagram.value = error_html(error)
            return
        if self.dashboard is not None:
            self.dashboard.close()
        try:
            self.dashboard = Dashboard(self.fleet[(host, domain)], device=disk)
            self.detail.children = (self.diagram, self.dashboard)
        except Error as error:
            self.dashboard = None
            self.detail.children = (self.diagram, widgets.HTML(error_html(error)))

    def close(self) -> None:
        self._closed.set()
        self.subscription.remove()
        self.refresher.close()
        if self.dashboard is not None:
            self.dashboard.close()
        super().close()


def _text(row: dict) -> str:
    return " ".join(str(row.get(name) or "") for name in (*CELLS, "error")).lower()


def _sortable(value: object) -> tuple[int, object]:
    """Numbers before text, missing values last, so one column sorts whatever it holds."""
    if value is None:
        return (2, "")
    return (0, value) if isinstance(value, int | float) else (1, str(value))
