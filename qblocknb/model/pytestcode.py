"""A recorded session as the source of a pytest file that replays it and checks what the session saw.

Steps, in the session's order:

- ``("lab", method, kwargs)``: ``lab.create(...)`` / ``lab.write(...)``, offline;
- ``("launch", kwargs)``: ``vm = lab.launch(...)``;
- ``("wait", job, status)``: the session waited for the job to be ready or to end;
- ``("observe", chain, view)``: the chain and the guest's view (``live.guestview``) at that point;
- ``("command", command, arguments, refused)``: a command; one QEMU refused is sent as it was, and must be
  refused again::

    >>> source = pytest_source([("launch", {"image": "a.qcow2"}), ("wait", "job0", "concluded")], "qemu0")
    >>> print(source[source.index("    with"):])
        with qb.Lab(tmp_path / "lab") as lab:
            vm = lab.launch(image='a.qcow2')
            vm.job('job0').wait(timeout=TIMEOUT)
    <BLANKLINE>
"""

from __future__ import annotations

from collections.abc import Sequence

HEADER = '''"""Replays the recorded session {name} against a fresh QEMU, and checks what that session saw."""

import pytest

import qblocknb as qb
from qblocknb.live.recorder import assert_observed

TIMEOUT = 120


def test_recorded_session(tmp_path):
    with qb.Lab(tmp_path / "lab") as lab:
'''
INDENT = " " * 8


def _call(target: str, kwargs: dict) -> str:
    return f"{target}({', '.join(f'{key}={value!r}' for key, value in kwargs.items())})"


def step_lines(step: Sequence) -> list[str]:
    """The lines of one step, unindented."""
    kind = step[0]
    if kind == "lab":
        return [_call(f"lab.{step[1]}", step[2])]
    if kind == "launch":
        return ["vm = " + _call("lab.launch", step[1])]
    if kind == "wait":
        verb = "wait_ready" if step[2] == "ready" else "wait"
        return [f"vm.job({step[1]!r}).{verb}(timeout=TIMEOUT)"]
    if kind == "observe":
        return [f"assert_observed(vm, {step[1]!r}, {step[2]!r}, timeout=TIMEOUT)"]
    command, arguments, refused = step[1:]
    if refused:  # sent as it was, past the toolkit's checks: QEMU must refuse it again
        return ["with pytest.raises(qb.Error):", f"    vm.send({command!r}, {arguments!r})"]
    return [f"vm.execute({command!r}, {arguments!r})"]


def pytest_source(steps: Sequence[Sequence], name: str) -> str:
    """The whole file."""
    body = [INDENT + line for step in steps for line in step_lines(step)]
    return HEADER.format(name=name) + "\n".join(body) + "\n"
