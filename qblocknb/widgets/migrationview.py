"""``MigrationView(migration)``: source and destination chains side by side, the steps, and the mirror.

The two sides wrap, one above the other, when they do not fit side by side,
and each diagram shrinks to the width it has rather than being cut off.
Both diagrams are ``ChainView``s, which redraw themselves on their own threads;
the view also pokes them at every step, so the destination's diagram changes
as soon as its export or ``cont`` does.  Show it, then run the flow::

    m = qb.StorageMigration(src, dst)
    display(qb.MigrationView(m))
    m.run()
"""

from __future__ import annotations

from html import escape

import ipywidgets as widgets
import pandas as pd

from qblocknb.migration.flow import PLAN, StorageMigration
from qblocknb.model.palette import BLUE, ERROR, MUTED, OK
from qblocknb.widgets.chainview import ChainView
from qblocknb.widgets.jobmonitor import JobMonitor

# Each side takes the width its diagram wants; when both do not fit they wrap, one above the other, and a
# diagram wider than the output shrinks (ChainView's fit) instead of being cut off on the right.
SIDE = {"flex": "1 1 auto", "min_width": "0", "max_width": "100%", "margin": "0 12px 8px 0"}
MARKS = {"ok": ("✓", OK), "running": ("…", BLUE), "failed": ("✗", ERROR), "": ("·", MUTED)}


def steps_html(migration: StorageMigration) -> str:
    """The plan as a table: the steps done, the one running, the one that failed, and those still to come."""
    rows = migration.steps.to_dict("records")
    done = {row["command"] for row in rows}
    pending = [
        {
            "step": "",
            "name": what,
            "machine": machine,
            "command": command,
            "duration_s": None,
            "outcome": "",
            "detail": "",
        }
        for method, machine, command, what in PLAN
        if command not in done and not (method == "export_target" and migration.export_command in done)
    ]
    lines = []
    for row in rows + pending:
        mark, colour = MARKS[row["outcome"]]
        seconds = "" if row["duration_s"] is None or pd.isna(row["duration_s"]) else f"{row['duration_s']:.2f} s"
        lines.append(
            f'<tr style="color:{colour}"><td>{mark}</td><td>{escape(row["machine"])}</td>'
            f"<td><code>{escape(row['command'])}</code></td><td>{escape(row['name'])}</td><td>{seconds}</td>"
            f"<td>{escape(row['detail'])}</td></tr>"
        )
    return f'<table class="qb-migration-steps">{"".join(lines)}</table>'


class MigrationView(widgets.VBox):
    """The two chains in an HBox, the step table, and a JobMonitor for the mirror once it starts."""

    def __init__(self, migration: StorageMigration) -> None:
        self.migration = migration
        self.source = ChainView(migration.source, fit=True)
        self.destination = ChainView(migration.destination, fit=True)
        self.sides = widgets.HBox(
            [
                widgets.VBox([widgets.HTML("<b>source</b>"), self.source], layout=SIDE),
                widgets.VBox(
                    [widgets.HTML(f"<b>destination</b> ({escape(migration.address)})"), self.destination], layout=SIDE
                ),
            ],
            layout={"flex_flow": "row wrap", "width": "100%"},
        )
        self.steps = widgets.HTML(steps_html(migration))
        self.mirror = widgets.VBox()
        super().__init__([self.sides, self.steps, self.mirror])
        self.add_class("qb-migration-view")
        self._subscription = migration.listeners.register(self._on_step)

    def _on_step(self, migration: StorageMigration, _row: dict) -> None:
        self.steps.value = steps_html(migration)
        if migration.job is not None and not self.mirror.children:
            self.mirror.children = (JobMonitor(migration.job, plot=False),)
        self.source.poke()
        self.destination.poke()

    def close(self) -> None:
        self._subscription.remove()
        for view in (self.source, self.destination, *self.mirror.children):
            view.close()
        super().close()
