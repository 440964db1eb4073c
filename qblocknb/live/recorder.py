"""A session that can become a test: ``RecordingLab`` keeps what rebuilds it, ``vm.history.to_pytest`` writes it.

QMP's history alone cannot rebuild a session: the images a Lab made and wrote offline are not in it, and
neither is what the session saw.  A ``RecordingLab`` is a Lab that also keeps its offline steps and the
launch; each QEMU it launches gets a ``Recorder``, which before every command sent while no job runs looks
at the chain and at what the guest reads (``guest_view``).  ``vm.history.to_pytest(path)`` then writes a
test that redoes it all in a fresh lab and asserts each look::

    lab = RecordingLab()
    vm = build_seed_chain(lab)
    ...
    vm.history.to_pytest("test_my_session.py")   # pytest test_my_session.py

One QEMU's session is written; what another QEMU of the same lab did to shared files is not replayed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from qblocknb.errors import Error
from qblocknb.live.guestview import ViewRun, guest_view
from qblocknb.live.lab import Lab
from qblocknb.live.machine import Machine
from qblocknb.model.pytestcode import pytest_source
from qblocknb.model.script import Entry, waits_before
from qblocknb.qmp import loop


class RecordingLab(Lab):
    """A Lab whose sessions can be written as pytest files (``vm.history.to_pytest``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path)
        self.steps: list[tuple[float, str, dict]] = []  # (when, lab method, its arguments)

    def create(self, name: str, size: int | str | None = None, backing: str | None = None, fmt: str = "qcow2") -> Path:
        made = super().create(name, size, backing, fmt)
        self.steps.append((time.time(), "create", {"name": name, "size": size, "backing": backing, "fmt": fmt}))
        return made

    def write(self, name: str, offset: int | str, length: int | str, pattern: int = 0xCD) -> None:
        super().write(name, offset, length, pattern)
        self.steps.append(
            (time.time(), "write", {"name": name, "offset": offset, "length": length, "pattern": pattern})
        )

    def launch(self, image: str, node_name: str = "node-A", **options: Any) -> Machine:
        """As ``Lab.launch``; a plain launch (no guest, no migration, no wrapper) is recorded."""
        machine = super().launch(image, node_name, **options)
        if not any(options.get(name) for name in ("guest", "incoming", "wrapper")):
            fmt = {"fmt": options["fmt"]} if options.get("fmt") else {}
            Recorder(machine, self, {"image": image, "node_name": node_name, **fmt})
        return machine


class Recorder:
    """Keeps what one QEMU's session needs to be replayed, and writes it as a pytest file."""

    def __init__(self, vm: Machine, lab: RecordingLab, launch: dict) -> None:
        self.vm, self.lab, self.launch, self.launched = vm, lab, launch, time.time()
        self.looks: dict[int, tuple[str, list[ViewRun]]] = {0: self.look()}  # before record i: (chain, view)
        history = vm.session.history
        history.before.register(self._before)
        history.exporter = self.write_pytest

    def look(self) -> tuple[str, list[ViewRun]]:
        return str(self.vm.chain()), guest_view(self.vm)

    def _before(self, command: str, _arguments: dict) -> None:
        """A look at the state this command starts from, when no job moves it (and not from the event thread)."""
        if command.startswith("query-") or loop.in_loop_thread() or self.vm.query("query-block-jobs"):
            return
        index = len(self.vm.session.history.records)
        self.looks[index] = self.look()

    def steps(self) -> list[tuple]:
        """Everything to replay, in order: lab steps, the launch, waits, looks and commands."""
        history = self.vm.session.history
        if self.vm.query("query-block-jobs"):
            raise Error(
                "the session cannot be written while a job runs",
                "what it leaves is not known yet",
                "wait for the job (job.wait()) or cancel it, then export",
            )
        records = list(history.records)
        entries = [Entry(r.time, r.command, self._in_lab(r.arguments), r.error) for r in records]
        looks = {**self.looks, len(entries): self.look()}
        gaps = waits_before(entries, list(history.marks))
        timed: list[tuple[float, tuple]] = [(at, ("lab", method, kwargs)) for at, method, kwargs in self.lab.steps]
        timed.append((self.launched, ("launch", self.launch)))
        for index, (entry, waits) in enumerate(zip([*entries, None], gaps, strict=True)):
            at = entry.time if entry else float("inf")
            timed += [(mark.time, ("wait", mark.job, mark.status)) for mark in waits]
            if index in looks:
                timed.append((at, ("observe", *looks[index])))
            if entry is not None and not entry.command.startswith("query-"):  # a refused one must be refused again
                timed.append((at, ("command", entry.command, entry.arguments, bool(entry.error))))
        return [step for _, step in sorted(timed, key=lambda item: item[0])]

    def write_pytest(self, path: Path) -> Path:
        path.write_text(pytest_source(self.steps(), self.vm.session.name))
        return path

    def _in_lab(self, value: Any) -> Any:
        """Arguments with the lab's folder left out of file names, so that the replay's own lab is used."""
        if isinstance(value, dict):
            return {key: self._in_lab(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self._in_lab(item) for item in value]
        if isinstance(value, str):
            return value.replace(f"{self.lab.path}/", "")
        return value


def assert_observed(vm: Machine, chain: str, view: list[ViewRun], timeout: float = 120) -> None:
    """Once no job runs, the chain and the guest's view are those the recorded session saw at this point."""
    for job in vm.job_list:
        if not job.ended:
            job.wait(timeout=timeout)
    assert str(vm.chain()) == chain, f"the chain is {vm.chain()}, the session saw {chain}"
    seen = guest_view(vm)
    assert seen == [tuple(run) for run in view], f"the guest reads {seen}, the session saw {view}"
