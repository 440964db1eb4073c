"""The I/O errors a block job meets, as QEMU reports them: ``BLOCK_JOB_ERROR`` and ``io-status``.

A job's error policy (``on-error``; ``on-source-error`` and ``on-target-error`` for mirror and backup) decides
QEMU's action: ``report`` ends the job with the error, ``ignore`` only sends the event, ``stop`` pauses the job
(``io-status`` ``failed``, or ``nospace`` for ENOSPC) until a resume, ``enospc`` is ``stop`` for ENOSPC and
``report`` otherwise. ``Faults`` is the part of ``JobState`` that follows this::

    >>> fault_text("read", "ignore")
    'read error, ignored'
"""

from __future__ import annotations

from dataclasses import dataclass

from qblocknb.errors import JobError
from qblocknb.model.chain import JobInfo

ACTION_WORDS = {"stop": "stopped", "report": "reported", "ignore": "ignored"}  # BlockErrorAction, in words


def fault_text(operation: str | None, action: str | None) -> str:
    """A ``BLOCK_JOB_ERROR`` in words: ``write error, stopped``."""
    return f"{operation or 'I/O'} error, {ACTION_WORDS.get(action or '', action)}"


@dataclass(frozen=True)
class FaultedJobInfo(JobInfo):
    """A job as the diagram shows it, with the I/O error it met (``write error, stopped``), if any."""

    fault: str | None = None


class Faults:
    """The last I/O error of a job and QEMU's ``io-status``; mixed into ``JobState``, which sets the fields."""

    id: str
    command: str
    status: str
    error: str | None
    user_paused: bool
    last_fault: dict | None  # the data of the last BLOCK_JOB_ERROR (operation, action), until a resume
    io_status: str  # query-block-jobs' io-status: ok, failed or nospace (set by a stop, reset by a resume)

    @property
    def io_error(self) -> str | None:
        """The last I/O error the job met, in words (``write error, stopped``); None again after a resume."""
        fault = self.last_fault
        return fault_text(fault.get("operation"), fault.get("action")) if fault else None

    @property
    def stopped_on_error(self) -> bool:
        """Paused by QEMU on an I/O error under the policy ``stop`` (or ``enospc`` and ENOSPC): resume goes on."""
        return self.status == "paused" and (self.last_fault or {}).get("action") == "stop"

    def resumed(self) -> None:
        """A resume was accepted: QEMU resets the error status and the job goes on."""
        self.user_paused, self.last_fault, self.io_status = False, None, "ok"

    def failure(self) -> JobError:
        """The sentence for a job that ended with an error: its id, the I/O error behind it, QEMU's error text.

        The reason (``why``) is QEMU's text alone, so that a caller can put it in a sentence of its own.
        """
        fault = self.last_fault or {}
        behind = f" on a {fault.get('operation')} error ({ACTION_WORDS.get(fault.get('action'))})" if fault else ""
        return JobError(
            f"job '{self.id}' ({self.command}) failed{behind}",
            self.error or "QEMU reported an error",
            "see job.events for the whole story",
        )

    def paused_on_error(self, goal: str) -> JobError:
        """Why waiting for ``goal`` would last forever: QEMU stopped the job on an error and waits for a resume."""
        operation = (self.last_fault or {}).get("operation") or "I/O"
        return JobError(
            f"job '{self.id}' ({self.command}) is paused on an I/O error and will not {goal}",
            f"QEMU stopped it on a {operation} error, as its error policy says",
            "call job.resume() once the fault is fixed, or job.cancel(force=True) to give up",
        )

    def cancel_refusal(self, force: bool) -> JobError | None:
        """QEMU cancels a job paused by the user, or stopped on an error, only with ``force``."""
        if force or not (self.user_paused or self.stopped_on_error):
            return None
        why = "QEMU stopped it on an I/O error" if self.stopped_on_error else "you paused it"
        return JobError(
            f"cannot cancel job '{self.id}' while it is paused",
            f"{why}, and QEMU cancels a paused job only when forced",
            "call job.cancel(force=True), or job.resume() first",
        )

    def fault_refusal(self, verb: str) -> JobError | None:
        """QEMU's answer to pause or resume that the error decides: a job it stopped is paused already."""
        if verb == "pause" and self.stopped_on_error:
            return JobError(
                f"cannot pause job '{self.id}'", "QEMU already paused it on an I/O error", "call job.resume() instead"
            )
        return None
