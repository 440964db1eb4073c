"""The error hierarchy: every failure a user can meet reads as one sentence.

Each error says what was asked, what went wrong and what to do, so a
notebook shows a line a person can act on instead of a traceback wall::

    >>> str(Error("block-stream on 'node-X' was refused", "no such node", "use one of node-A, node-B"))
    "block-stream on 'node-X' was refused: no such node; use one of node-A, node-B."
"""

from __future__ import annotations

from qblocknb.model.permissions import conflict_todo


class Error(Exception):
    """Base of every qblocknb error; its text is a complete sentence."""

    def __init__(self, what: str, why: str = "", todo: str = "") -> None:
        self.what, self.why, self.todo = what, why, todo
        text = what
        if why:
            text += f": {why}"
        if todo:
            text += f"; {todo}"
        if not text.endswith("."):
            text += "."
        super().__init__(text)


class InputError(Error):
    """An argument was refused before anything was sent to QEMU."""


class UnknownCommand(InputError, AttributeError):
    """A QMP command this QEMU does not have; also an AttributeError so ``hasattr(vm, ...)`` works."""


class CommandError(Error):
    """QEMU answered a command with an error; its class and description are kept."""

    def __init__(self, command: str, error_class: str, desc: str, todo: str = "") -> None:
        self.command, self.error_class, self.desc = command, error_class, desc
        todo = todo or conflict_todo(desc) or "check the values it names against vm.chain() and vm.query_block_jobs()"
        super().__init__(f"QEMU refused '{command}'", f"{desc} ({error_class})", todo)


class QEMUGone(Error):
    """The QEMU process died or its QMP socket closed."""


class Timeout(Error):
    """QEMU did not answer or a job did not reach a state in time."""


class JobError(Error):
    """A block job ended with an error, or a verb was refused in its state."""


class ToolError(Error):
    """An offline tool (qemu-img, qemu-io) failed."""
