"""``fleet.plan(rule)``: one plan per selected disk, made on the chain libvirt describes, no Machine needed.

Each disk's goal is what the rule makes of its chain; the plan is ``qb.plan``'s on that chain, with each
image's bytes from the host's block stats.  libvirt carries out fewer moves than QEMU (no stream into an
intermediate image, no mirror ``sync=none``): where the cheapest plan needs one, the cheapest rejected plan
whose every step libvirt can carry out is taken instead, and the disk's ``note`` says so.  A disk of a
shut-off domain, or of a domain whose chain is not fully known, is planned but not run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import pandas as pd

from qblocknb.errors import InputError
from qblocknb.fleet.frames import disk_rows
from qblocknb.fleet.reads import INACTIVE, LIVE, DomainState
from qblocknb.model.chain import Chain
from qblocknb.model.planner import Plan, make_plan
from qblocknb.model.sizes import human_size
from qblocknb.model.virsh import NoLibvirtEquivalent, translate

if TYPE_CHECKING:
    from qblocknb.fleet.fleet import Fleet
    from qblocknb.fleet.runner import Progress
    from qblocknb.model.goals import Rule

Select = Callable[[dict], bool] | pd.DataFrame | None  # a predicate on a row of fleet.disks, or some of its rows
PLAN_COLUMNS = ["host", "domain", "disk", "state", "chain", "goal", "action", "steps", "bytes", "invalid", "note"]


@dataclass
class DiskPlan:
    """One disk's way to its goal: the plan, or why it is not run."""

    host: str
    uri: str
    domain: str
    disk: str
    state: str
    chain: Chain
    goal: str
    plan: Plan | None = None
    note: str = ""  # why the plan differs from the cheapest, or why it is not run
    runnable: bool = True

    @property
    def key(self) -> tuple[str, str, str]:
        return self.host, self.domain, self.disk

    @property
    def at_goal(self) -> bool:
        return str(self.chain) == self.goal

    @property
    def action(self) -> str:
        if self.at_goal:
            return "at goal"
        return "run" if self.runnable and self.plan is not None else "skip"


@dataclass
class FleetPlan:
    """The plans of every selected disk, their totals, and the hosts that could not be read."""

    rule: str
    disks: list[DiskPlan]
    unreachable: dict[str, str] = field(default_factory=dict)  # host -> its error
    outcomes: dict = field(default_factory=dict, repr=False)  # filled by run(): key -> runner.Outcome
    fleet: Fleet | None = field(default=None, repr=False)  # told of each job started (libvirt announces only ends)

    @property
    def frame(self) -> pd.DataFrame:
        """One row per disk: its chain, goal, action (run, at goal, skip), steps, bytes, images left invalid."""
        rows = [
            {
                "host": item.host,
                "domain": item.domain,
                "disk": item.disk,
                "state": item.state,
                "chain": str(item.chain),
                "goal": item.goal,
                "action": item.action,
                "steps": len(item.plan.steps) if item.plan else 0,
                "bytes": item.plan.cost.bytes if item.plan else 0,
                "invalid": ", ".join(item.plan.cost.invalid) if item.plan else "",
                "note": item.note,
            }
            for item in self.disks
        ]
        return pd.DataFrame(rows, columns=PLAN_COLUMNS)

    @property
    def totals(self) -> dict:
        """Disks by action, bytes to copy and images left invalid, over the disks that run."""
        running = [item for item in self.disks if item.action == "run" and item.plan is not None]
        return {
            "disks": len(self.disks),
            "run": len(running),
            "at goal": sum(item.at_goal for item in self.disks),
            "skip": sum(item.action == "skip" for item in self.disks),
            "bytes": sum(item.plan.cost.bytes for item in running),
            "invalid": sum(len(item.plan.cost.invalid) for item in running),
            "unreachable hosts": len(self.unreachable),
        }

    def __str__(self) -> str:
        t = self.totals
        lines = [
            f"{self.rule} over {t['disks']} disks: {t['run']} to run, {t['at goal']} at the goal, {t['skip']} skipped; "
            f"copies about {human_size(t['bytes'])}, leaves {t['invalid']} images invalid"
        ]
        lines += [f"  {host}: {error}" for host, error in self.unreachable.items()]
        for item in self.disks:
            lines.append(f"  {item.host} {item.domain} {item.disk}: {item.chain}  ->  {item.goal}  [{item.action}]")
            if item.plan is not None and not item.at_goal:
                lines += [f"      {line}" for line in item.plan.virsh_lines(item.domain, item.disk)]
            if item.note:
                lines.append(f"      {item.note}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        from html import escape

        head = escape(str(self).splitlines()[0])
        errors = "".join(f"<p style='color:#b00'>{escape(h)}: {escape(e)}</p>" for h, e in self.unreachable.items())
        return f"<p><b>{head}</b></p>{errors}{self.frame.to_html(index=False)}"

    def run(
        self,
        per_host: int = 2,
        bandwidth: int | str | None = "50M",
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> pd.DataFrame:
        """Run the plans, at most ``per_host`` disks at once per host, each job at ``bandwidth`` bytes/s.

        A disk that fails is reported in its row and stops nothing else; a disk already at its goal is
        skipped, so running again finishes what is left.  Returns the summary (``self.summary``).
        """
        from qblocknb.fleet.runner import run_fleet_plan

        return run_fleet_plan(self, per_host, bandwidth, progress, timeout)

    @property
    def summary(self) -> pd.DataFrame:
        """Each disk's outcome so far: done, at goal, failed, skipped, or running with its job's progress."""
        from qblocknb.fleet.runner import summary_frame

        return summary_frame(self)


def plan_fleet(fleet: Fleet, rule: Rule, select: Select = None, prefer: str | Sequence[str] = ()) -> FleetPlan:
    """Read the fleet once and plan each selected disk to ``rule(chain)``."""
    reads = fleet.read()
    domains = {(d.host, d.name): d for read in reads for d in read.domains}
    chosen = _selected(disk_rows(reads), select)
    disks = [
        _disk_plan(domains[(row["host"], row["domain"])], fleet.hosts[row["host"]], row["disk"], rule, prefer)
        for row in chosen
    ]
    unreachable = {read.host: read.error for read in reads if read.error}
    return FleetPlan(str(rule), disks, unreachable, fleet=fleet)


def _selected(rows: list[dict], select: Select) -> list[dict]:
    rows = [row for row in rows if not row.get("error")]
    if select is None:
        return rows
    if isinstance(select, pd.DataFrame):
        wanted = set(zip(select["host"], select["domain"], select["disk"], strict=True))
        return [row for row in rows if (row["host"], row["domain"], row["disk"]) in wanted]
    return [row for row in rows if select(row)]


def _disk_plan(domain: DomainState, uri: str, disk: str, rule: Rule, prefer: str | Sequence[str]) -> DiskPlan:
    chain = domain.chain(disk)
    made = DiskPlan(domain.host, uri, domain.name, disk, domain.state, chain, "")
    try:
        made.goal = rule(chain)
        if made.at_goal:
            return made
        made.plan, made.note = libvirt_plan(make_plan(chain, made.goal, prefer=prefer), domain.name, disk)
    except InputError as error:
        made.goal = made.goal or str(chain)
        made.note, made.runnable = str(error), False
        return made
    if domain.source != LIVE:
        unknown = "; its chain below the active image is not known" if domain.source == INACTIVE else ""
        made.note = f"not run: the domain is {domain.state}, and block jobs need it running{unknown}"
        made.runnable = False
    return made


def libvirt_plan(plan: Plan, domain: str, disk: str) -> tuple[Plan, str]:
    """``plan``, or its cheapest alternative whose every step libvirt carries out; with a note when it differs."""
    refusal = _refusal(plan, domain, disk)
    if refusal is None:
        return replace(plan, virsh_names=(domain, disk)), ""
    for alternative in plan.alternatives:
        if _refusal(alternative, domain, disk) is None:
            chosen = replace(plan, route=alternative.route, alternatives=(), virsh_names=(domain, disk))
            return chosen, f"libvirt cannot {refusal}; this plan instead {alternative.cost}"
    raise InputError(
        f"no plan from {plan.start} to {plan.goal} has a libvirt form",
        f"the cheapest would {refusal}, and libvirt cannot",
        "pick a goal that keeps the active layer's place, or drive this disk through QEMU",
    )


def _refusal(routed: Plan, domain: str, disk: str) -> str | None:
    """What libvirt cannot do in the plan's steps, or None when it can do them all."""
    for step, chain in zip(routed.steps, routed.chains, strict=False):
        try:
            translate(step.command, dict(step.arguments), chain, domain, disk)
        except NoLibvirtEquivalent as refused:
            return refused.cannot
    return None
