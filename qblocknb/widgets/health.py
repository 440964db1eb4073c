"""``Health(vm)``: one line, green, amber or red, saying what ``qb.diagnose(vm)`` finds, with the findings and
their fixes one click away.

The doctor asks QEMU a dozen questions and runs ``qemu-img info`` on each layer: too much for every 20 ms job
sample, and no QMP call may be made on the session's event thread. So events and commands only poke a
``Refresher``, whose own thread diagnoses at most once a ``gap`` (a second), without the doctor's pause to watch
a mirror converge (``sample=0``). A Fix button runs ``finding.fix.run(vm)`` and says in one sentence what it did,
or why it failed; then the line is read again.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from html import escape

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.live.diagnose import diagnose
from qblocknb.model.doctor import Finding, Findings
from qblocknb.model.palette import ERROR, MUTED, OK, WARN
from qblocknb.render.doctorview import findings_html
from qblocknb.widgets.html import error_html, note_html
from qblocknb.widgets.refresher import Refresher

GAP = 1.0  # seconds between two diagnoses at least: a running job's events come far faster
COLOURS = {"green": OK, "amber": WARN, "red": ERROR}


def health_colour(findings: Findings) -> str:
    """``red`` when a finding is an error, ``amber`` when one is a warning, else ``green``."""
    if findings.errors:
        return "red"
    return "amber" if any(finding.severity == "warning" for finding in findings) else "green"


class Health(widgets.VBox):
    """The doctor's verdict on one VM, kept current; ``.findings`` and ``.colour`` hold what it shows."""

    def __init__(self, vm, gap: float = GAP, sample: float = 0.0) -> None:
        self.vm, self.sample = vm, sample
        self.findings: Findings | None = None  # None until the first diagnosis, or when QEMU could not be read
        self.colour = ""  # green, amber or red once diagnosed
        self.line = widgets.HTML(note_html("health: reading QEMU…"))
        self.check_button = widgets.Button(description="check again", icon="refresh", tooltip="qb.diagnose(vm)")
        self.table = widgets.HTML()
        self.fixes = widgets.VBox()
        self.outcome = widgets.HTML()  # what the last Fix did, as a sentence
        self.details = widgets.Accordion([widgets.VBox([self.table, self.fixes, self.outcome])], selected_index=None)
        self.details.titles = ("findings",)
        self._shown: list[str] = []  # the findings the buttons were made for
        self._usable: str | None = None
        self._lock = threading.Lock()
        super().__init__([widgets.HBox([self.line, self.check_button]), self.details])
        self.add_class("qb-health")
        self.check_button.on_click(lambda _button: self.poke())
        self._refresher = Refresher(
            self.check, signature=self._signature, finished=lambda: not vm.alive(), gap=gap, name="qblocknb-view-health"
        )
        self._subscription = vm.listeners.register(lambda _event: self._refresher.poke())  # no QMP call here
        self.poke()  # the first diagnosis too runs on the thread: opening the dashboard does not wait for it

    def poke(self) -> None:
        """Diagnose again soon, on the health thread."""
        self._refresher.poke()

    def check(self) -> Findings | None:
        """Diagnose now, on the caller's thread, and show it; None when QEMU could not be read."""
        try:
            findings = diagnose(self.vm, sample=self.sample)
        except Error as error:
            with self._lock:
                self.findings, self.colour = None, ""
                self.line.value = note_html(f"health not known: {error}", MUTED)
            return None
        with self._lock:
            self.details.titles = (f"findings: {findings.summary}",)
            shown = [str(finding) for finding in findings]
            if shown != self._shown:
                self._shown = shown
                self.table.value = findings_html(findings)
                old, self.fixes.children = self.fixes.children, tuple(self._button(f) for f in findings if f.fix)
                for button in old:
                    button.close()
            self.line.value = self._line(findings)
            self.findings, self.colour = findings, health_colour(findings)  # last: whoever reads them sees it shown
        return findings

    def fix(self, finding: Finding) -> None:
        """Run ``finding``'s fix, say what happened in one sentence, and diagnose again."""
        fix = finding.fix
        if fix is None:
            return
        try:
            fix.run(self.vm)
        except Error as error:
            self.outcome.value = error_html(f"{finding.subject}: {fix.summary} failed: {error}")
        else:
            self.outcome.value = note_html(f"{finding.subject}: {fix.summary}, done ({fix}).", OK)
        self.poke()

    def set_usable(self, why: str | None) -> None:
        """Disable every button while QEMU cannot take commands (``why`` says why), enable them again after."""
        with self._lock:
            self._usable = why
            for button in (self.check_button, *self.fixes.children):
                button.disabled = why is not None

    def close(self) -> None:
        self._subscription.remove()
        self._refresher.close()
        super().close()

    def _button(self, finding: Finding) -> widgets.Button:
        button = widgets.Button(
            description=f"Fix {finding.subject}: {finding.fix.summary}",  # type: ignore[union-attr]
            tooltip=str(finding.fix),
            button_style="danger" if finding.severity == "error" else "warning",
            disabled=self._usable is not None,
            layout=widgets.Layout(width="auto"),
        )
        button.on_click(lambda _button: self.fix(finding))
        return button

    @staticmethod
    def _line(findings: Findings) -> str:
        colour = health_colour(findings)
        first = f" — {findings[0].subject}: {findings[0].problem}" if len(findings) else ""
        return (
            f'<div class="qb-health-line"><span style="color:{COLOURS[colour]};font-size:1.2em">●</span> '
            f"<b>health</b>: {escape(findings.summary + first)}</div>"
        )

    def _signature(self) -> Hashable:
        """Changes after a command that changed the block graph, and when a job changes status; costs no QMP call."""
        return self.vm.state.generation, tuple((job.id, job.status) for job in self.vm.job_list)
