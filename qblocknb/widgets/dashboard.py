"""``Dashboard(vm)``: the health line, the chain view, a monitor per running job, the forms, the console and the
history.

The chain view's thread drives the rest: every new chain goes to the forms
(only the visible one redraws its preview), new jobs get a monitor, and the
history frame is redrawn.  A thread of its own watches, without asking QEMU,
whether QEMU can still take commands: when it died, its socket closed or it
was stopped, a red line says so and every button that would send something
is disabled (again enabled if a stopped QEMU continues); the thread ends
once QEMU is gone for good.
"""

from __future__ import annotations

import threading

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.live.jobs import Job
from qblocknb.model.chain import Chain
from qblocknb.widgets.chainview import ChainView
from qblocknb.widgets.console import Console
from qblocknb.widgets.forms import FORMS
from qblocknb.widgets.health import Health
from qblocknb.widgets.html import error_html
from qblocknb.widgets.jobmonitor import JobMonitor
from qblocknb.widgets.refresher import Refresher

HISTORY_ROWS = 15
HISTORY_COLUMNS = ["time", "command", "arguments", "duration_s", "outcome", "error"]
KEEP_ENDED = 1  # ended jobs whose monitor stays, so their outcome can be read


def why_unusable(vm) -> str | None:
    """Why ``vm`` cannot take commands now (its process died, its socket closed, it is stopped), or None.

    Read from the process and the connection only, never from QEMU, so that it answers at once even when QEMU
    does not.
    """
    gone = vm.gone_error("QEMU takes no more commands")  # its process died, or its connection closed
    if gone is not None:
        return str(gone)
    if vm.process is not None and vm.process.stopped():
        return str(
            Error(
                "QEMU does not answer",
                f"its process (pid {vm.pid}) is stopped",
                f"continue it with kill -CONT {vm.pid}, or end it with lab.close()",
            )
        )
    return None


class Dashboard(widgets.VBox):
    """Everything for one QEMU in one widget."""

    def __init__(self, vm, device: str | None = None) -> None:
        self.vm = vm
        self.chain_view = ChainView(vm, device)
        chain = self.chain_view.chain
        self.forms = {form.commands[0]: form(vm, chain) for form in FORMS}
        self.console = Console(vm)
        self.history = widgets.HTML()
        self.state = widgets.HTML()  # empty while QEMU takes commands, else why it does not
        self.health = Health(vm)  # qb.diagnose(vm) as one coloured line, on its own thread
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
        super().__init__([self.state, self.health, self.chain_view, self.jobs_box, self.tabs])
        self.add_class("qb-dashboard")
        if chain is not None:
            self._on_chain(chain)
        self.show_state()
        self._watch = Refresher(
            self.show_state,
            signature=lambda: why_unusable(vm),
            finished=lambda: not vm.alive(),  # QEMU died or its connection closed: nothing can change again
            name="qblocknb-dashboard",
        )

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

    def show_state(self) -> str | None:
        """Say whether QEMU takes commands, and enable or disable every button that sends one; the reason, or None."""
        why = why_unusable(self.vm)
        for form in self.forms.values():
            form.set_usable(why)
        self.console.set_usable(why)
        self.health.set_usable(why)
        with self._lock:
            monitors = list(self.monitors.values())
        for monitor in monitors:
            if why is None:
                monitor.error.value = ""
                monitor.update()
                continue
            for button in monitor.buttons.values():
                button.disabled, button.button_style = True, ""
            monitor.speed.disabled = True
            monitor.error.value = error_html(why)
        self.state.value = error_html(why) if why else ""  # last: whoever sees it sees the buttons set too
        return why

    def show_history(self) -> None:
        frame = self.vm.history.tail(HISTORY_ROWS)[HISTORY_COLUMNS]
        table = frame.to_html(index=False, float_format=lambda x: f"{x:.3f}", border=0)
        self.history.value = f'<div style="max-height:360px;overflow:auto">{table}</div>'

    def _tab_changed(self, change: dict) -> None:
        for index, form in enumerate(self.forms.values()):
            form.show(index == change["new"])

    def close(self) -> None:
        self._watch.close()
        self.health.close()
        self.chain_view.close()
        self.console.close()
        for monitor in self.monitors.values():
            monitor.close()
        for form in self.forms.values():
            form.close()
        super().close()
