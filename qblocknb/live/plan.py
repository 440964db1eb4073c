"""``qb.plan(vm, goal)`` and ``plan.run(vm)``: a plan made from a live chain, and run through the usual jobs.

From a Machine, the plan starts at its current chain and estimates bytes from what each image holds
(``qemu-img map`` after a flush); ``run`` sends each step with the Machine's own checks, waits for READY
and completes where that is needed, reads the chain back after each step, and stops with a sentence at
the first step that fails or leaves another chain than planned::

    >>> import qblocknb as qb
    >>> from qblocknb.teaching.seedchain import build_seed_chain
    >>> with qb.Lab() as lab:                     # doctest: +SKIP
    ...     vm = build_seed_chain(lab)
    ...     plan = qb.plan(vm, "[a.qcow2] <-- [e.qcow2]")
    ...     str(plan.run(vm))
    '[a.qcow2] <-- [e.qcow2]'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from qblocknb.errors import Error, InputError, JobError
from qblocknb.live import images
from qblocknb.live.guestview import Flushable
from qblocknb.model.chain import Chain
from qblocknb.model.planmoves import Layout, Move
from qblocknb.model.planner import Plan, chain_from_notation, make_plan, parse_goal

if TYPE_CHECKING:
    from qblocknb.live.jobs import Job

Progress = Callable[[int, Move, str], None]  # (step number from 1, the step, "started" or "done")


class Planned(Flushable, Protocol):
    """A live QEMU as plans see it: its chain and files (after a flush), its jobs, and the checked commands."""

    @property
    def job_list(self) -> list[Job]: ...

    def execute(self, command: str, arguments: dict | None = None, /) -> Job: ...


class StepFailed(JobError):
    """A step of a plan failed or left another chain than planned; the steps before it are done."""

    def __init__(self, what: str, why: str, chain: Chain | None) -> None:
        self.chain = chain
        now = f"the chain is now {chain}" if chain is not None else "the chain could not be read"
        super().__init__(what, why, f"{now}; plan again from there with qb.plan(vm, goal)")


def plan(
    source: Planned | Chain | str,
    goal: str | Chain | Sequence[str],
    allocation: dict[str, Layout] | None = None,
    prefer: str | Sequence[str] = (),
) -> Plan:
    """The plan from ``source`` (a Machine, a Chain, or a chain in the seed's notation) to ``goal``.

    An impossible goal is refused with an InputError, before anything is sent to QEMU; ``prefer`` changes
    the order plans are compared in (``prefer=("invalid",)`` keeps points in time before saving bytes).
    """
    if isinstance(source, Chain | str):
        chain = chain_from_notation(source) if isinstance(source, str) else source
        return make_plan(chain, goal, allocation, prefer=prefer)
    chain = source.chain()
    for target in parse_goal(chain, goal).new:
        path = source.host_path(target)
        if path.exists():
            raise InputError(
                f"the new copy target {target} already exists ({path})",
                "drive-mirror would overwrite it",
                "remove it, or name another file",
            )
    if allocation is None:
        allocation = read_allocation(source, chain)
    made = make_plan(chain, goal, allocation, {job.id for job in source.job_list}, prefer)
    return replace(made, virsh_names=source.virsh.names)


def read_allocation(vm: Flushable, chain: Chain) -> dict[str, Layout]:
    """The byte ranges each image holds itself (``qemu-img map``, depth 0), for the images this host can read.

    QEMU is flushed first, so that the files tell the truth; an image this host cannot see is left out
    (its allocated size stands in).
    """
    vm.flush()
    allocation: dict[str, Layout] = {}
    for image in chain.images:
        path = vm.host_path(image.file)
        if path.is_file():
            ranges = images.allocation_map(path)
            allocation[image.file] = [(r["start"], r["length"]) for r in ranges if r["depth"] == 0 and r["data"]]
    return allocation


def run_plan(plan: Plan, vm: Planned, timeout: float | None = None, progress: Progress | None = None) -> Chain:
    """Run each step on ``vm``; the chain reached. ``timeout`` bounds each wait (by default: while QEMU lives)."""
    now = vm.chain()
    if _nodes(now) != _nodes(plan.start):
        raise InputError(
            f"this plan starts from {plan.start} ({_nodes(plan.start)}), but the chain is {now} ({_nodes(now)})",
            "its steps name images and nodes of the other chain",
            "make a new plan with qb.plan(vm, goal)",
        )
    total = len(plan.steps)
    for number, step in enumerate(plan.steps, 1):
        where = f"step {number} of {total} of the plan to {plan.goal}, {step.shell_line},"
        if progress:
            progress(number, step, "started")
        try:
            job = vm.execute(step.command, dict(step.arguments))
            if step.ready:
                job.wait_ready(timeout).complete()
            job.wait(timeout)
            now = vm.chain()
        except Error as error:
            raise StepFailed(f"{where} failed", str(error).rstrip("."), _chain_or_none(vm)) from None
        if str(now) != str(step.chain):
            raise StepFailed(f"{where} left {now}", f"the plan expected {step.chain}", now)
        if progress:
            progress(number, step, "done")
    return now


def _nodes(chain: Chain) -> str:
    return ", ".join(image.node_name or image.name for image in chain)


def _chain_or_none(vm: Planned) -> Chain | None:
    try:
        return vm.chain()
    except Error:
        return None


Plan.run = run_plan  # the model plans without QEMU; the live layer gives plans the way to run
