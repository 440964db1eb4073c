"""``Dashboard(vm)``: the chain view, a monitor per running job, the forms, the console and the history.

The chain view's thread drives the rest: every new chain goes to the forms
(only the visible one redraws its preview), new jobs get a monitor, and the
history frame is redrawn.
"""

from __future__ import annotations

import threading

import ipywidgets as widgets

from qblocknb.live.jobs import Job
from qblocknb.model.chain import Chain
from qblocknb.widgets.chainview import ChainView
from qblocknb.widgets.console import Console
from qblocknb.widgets.forms import FORMS
from qblocknb.widgets.jobmonitor import JobMonitor

HISTORY_ROWS = 15
HISTORY_COLUMNS = ["time", "command", "arguments", "duration_s", "outcome", "error"]
KEEP_ENDED = 1  # ended jobs whose monitor stays, so their outcome can be read


class Dashboard(widgets.VBox):
    """Everything for one QEMU in one widget."""

    def __init__(self, vm, device: str | None = None) -> None:
        self.vm = vm
        self.chain_view = ChainView(vm, device)
        chain = self.chain_view.chain
        self.forms = {form.commands[0]: form(vm, chain) for form in FORMS}
        self.console = Console(vm)
        self.history = widgets.HTML()
        self.jobs_box = widgets.VBox()
        self.monitors: dict[Job, JobMonitor] = {}
        self._seen = {job for job in vm.job_list if job.ended}  # old jobs get no monitor
        self._lock = threading.Lock()
        pages = [*self.forms.values(), self.console, self.history]
        self.tabs = widgets.Tab(children=pages)
        self.tabs.titles = [*(form.commands[0] for form in self.forms.values()), "console", "history"]
        self.tabs.observe(self._tab_changed, "selected_index")
        self._tab_changed({"new": self.tabs.selected_index or 0})
        for form in self.forms.values():
            form.listeners.register(self._on_run)
        self.chain_view.listeners.register(self._on_chain)
        super().__init__([self.chain_view, self.jobs_box, self.tabs])
        self.add_class("qb-dashboard")
        if chain is not None:
            self._on_chain(chain)

    def _on_run(self, _result: object) -> None:
        self.sync_jobs()
        self.chain_view.poke()

    def _on_chain(self, chain: Chain) -> None:
        """A new chain arrived (on the chain view's thread): pass it on, follow the jobs, redraw the history."""
        for form in self.forms.values():
            form.set_chain(chain)
        self.sync_jobs()
        self.show_history()

    def sync_jobs(self) -> None:
        """A monitor for every job started since the dashboard opened; ended ones leave, but for the last."""
        with self._lock:
            for job in self.vm.job_list:
                if job not in self._seen:
                    self._seen.add(job)
                    self.monitors[job] = JobMonitor(job)
            ended = [job for job in self.monitors if job.ended]
            for job in ended[:-KEEP_ENDED] if len(ended) > KEEP_ENDED else []:
                self.monitors.pop(job).close()
            self.jobs_box.children = tuple(self.monitors.values())

    def show_history(self) -> None:
        frame = self.vm.history.tail(HISTORY_ROWS)[HISTORY_COLUMNS]
        table = frame.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)
        self.history.value = f'<div style="max-height:360px;overflow:auto">{table}</div>'

    def _tab_changed(self, change: dict) -> None:
        for index, form in enumerate(self.forms.values()):
            form.show(index == change["new"])

    def close(self) -> None:
        self.chain_view.close()
        self.console.close()
        for monitor in self.monitors.values():
            monitor.close()
        for form in self.forms.values():
            form.close()
        super().close()
