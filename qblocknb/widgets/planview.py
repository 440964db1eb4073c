"""``PlanView(vm)``: tick the images to keep, name new copies, and see the plan before running it.

Each change of the boxes makes a new plan (``qb.plan``, nothing sent to QEMU) and shows its steps as
qmp-shell lines and JSON, the chain after each step, and the alternatives it rejected with the reason;
an impossible goal shows its sentence instead.  Run runs the plan on a worker thread, one step after
the other, with a progress bar, then offers the new chain's images.  ``plan_html(plan)`` is also what a
notebook shows for a plan.
"""

from __future__ import annotations

import threading
from html import escape

import ipywidgets as widgets

from qblocknb.errors import Error
from qblocknb.live.plan import plan, read_allocation, run_plan
from qblocknb.model.chain import Chain
from qblocknb.model.palette import OK
from qblocknb.model.planmoves import Layout, Move
from qblocknb.model.planner import Plan
from qblocknb.widgets.html import code_html, diagram_html, error_html, note_html


def plan_html(the_plan: Plan) -> str:
    """The plan as HTML: its cost, each step with its command and the chain after it, what it rejected."""
    parts = [
        f"<div><b>Plan: {escape(str(the_plan.start))} → {escape(the_plan.goal)}</b></div>",
        note_html(str(the_plan.cost)),
    ]
    parts.append(diagram_html(the_plan.start, "Now", fit=True))
    if not the_plan.steps:
        parts.append(note_html("The chain is the goal already: nothing to do."))
    before = the_plan.start
    for number, step in enumerate(the_plan.steps, 1):
        caption = f"{number}. {step.summary}"
        parts += [code_html(f"(QEMU) {step.shell_line}"), code_html(step.json)]
        parts.append(diagram_html(step.chain, caption, fit=True, diff_from=before))
        before = step.chain
    if the_plan.alternatives:
        items = "".join(
            f"<li><code>{escape('; '.join(s.shell_line for s in alternative.steps))}</code>: "
            f"{escape(alternative.reason)}</li>"
            for alternative in the_plan.alternatives
        )
        parts.append(f"<div><b>Rejected</b><ul>{items}</ul></div>")
    return f'<div class="qb-plan">{"".join(parts)}</div>'


class PlanView(widgets.VBox):
    """Boxes for the images to keep, a text box for new copy targets, the plan, and Run."""

    def __init__(self, vm) -> None:
        self.vm = vm
        self.chain: Chain | None = None
        self.plan: Plan | None = None
        self.worker: threading.Thread | None = None  # the thread that runs (or last ran) the plan
        self.running = False
        self.boxes: dict[str, widgets.Checkbox] = {}  # image file -> its box
        self._allocation: dict[str, Layout] = {}
        self._settling = False  # set while the boxes are rebuilt, so that no half-made goal is planned
        self.keep_row = widgets.HBox()
        self.targets = widgets.Text(description="new copies", placeholder="e.qcow2 (on top, made by a mirror)")
        self.targets.observe(self._changed, "value")
        self.run_button = widgets.Button(description="Run plan", button_style="primary", icon="play", disabled=True)
        self.run_button.on_click(lambda _button: self.run())
        self.progress = widgets.IntProgress(min=0, max=1, value=0, description="steps")
        self.status = widgets.HTML()
        self.error = widgets.HTML()
        self.view = widgets.HTML()
        header = widgets.HTML("<b>Keep these images</b> (base first; untick to drop one)")
        super().__init__(
            [header, self.keep_row, self.targets, self.run_button, self.progress, self.status, self.error, self.view]
        )
        self.add_class("qb-plan-view")
        self.refresh()

    @property
    def goal(self) -> list[str]:
        """The ticked images, base first, then the new copy targets typed in."""
        kept = [file for file, box in self.boxes.items() if box.value]
        return kept + self.targets.value.replace(",", " ").split()

    def refresh(self) -> None:
        """Read the chain and what its images hold, and offer one box per image, all ticked."""
        try:
            self.chain = self.vm.chain()
            self._allocation = read_allocation(self.vm, self.chain)
        except Error as error:
            self.error.value = error_html(error)
            return
        self.boxes = {image.file: widgets.Checkbox(value=True, description=image.name) for image in self.chain}
        for box in self.boxes.values():
            box.observe(self._changed, "value")
        self.keep_row.children = list(self.boxes.values())
        self.update()

    def update(self) -> Plan | None:
        """Plan for the goal the boxes describe; an impossible goal shows its sentence and disables Run."""
        try:
            self.plan = plan(self.vm, self.goal, allocation=self._allocation)
        except Error as error:
            self.plan = None
            self.error.value = error_html(error)
            self.view.value = ""
            self.run_button.disabled = True
            return None
        self.error.value = ""
        self.view.value = plan_html(self.plan)
        self.run_button.disabled = not self.plan.steps or self.running
        return self.plan

    def run(self) -> None:
        """Run the plan on a worker thread, so that the notebook stays free while the jobs run."""
        if self.plan is None or self.running:
            return
        self.running, self.run_button.disabled = True, True
        self.progress.max, self.progress.value = max(len(self.plan.steps), 1), 0
        self.worker = threading.Thread(target=self._run, args=(self.plan,), name="qb-plan", daemon=True)
        self.worker.start()

    def _run(self, chosen: Plan) -> None:
        failure: Error | None = None
        try:
            reached = run_plan(chosen, self.vm, progress=self._step)
        except Error as error:
            failure = error
        finally:
            self.running = False
            self._settling = True
            self.targets.value = ""
            self._settling = False
            self.refresh()  # the new chain's boxes; the outcome is shown after, so that it stays
        if failure is not None:
            self.error.value, self.status.value = error_html(failure), ""
        else:
            self.status.value = note_html(f"Done: the chain is {reached}", OK)

    def _changed(self, _change: dict) -> None:
        if not self._settling:
            self.update()

    def _step(self, number: int, step: Move, state: str) -> None:
        """Progress from the worker: which step runs, and how many are done."""
        total = self.progress.max
        if state == "started":
            self.status.value = note_html(f"Step {number} of {total} running: {step.shell_line}")
        else:
            self.progress.value = number
