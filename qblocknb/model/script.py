"""A session's commands as a qmp-shell script, and the script read back.

One line per command, in qmp-shell's syntax (``format_line``).  What a replay must not send is kept as a
note: queries (they change nothing), commands QEMU refused (with its error).  Where the session waited for
a job, a ``# wait: JOB ready`` or ``# wait: JOB concluded`` note says so, from the job's events::

    >>> entries = [Entry(1.0, "block-commit", {"device": "node-D", "job-id": "job1"}),
    ...            Entry(3.0, "block-job-complete", {"device": "job1"})]
    >>> print(script_text(entries, [Mark(2.0, "job1", "ready"), Mark(4.0, "job1", "concluded")]))
    block-commit device=node-D job-id=job1
    # wait: job1 ready
    block-job-complete device=job1
    # wait: job1 concluded
    >>> read_script("block-job-complete device=job1\\n# wait: job1 concluded")
    [('command', 'block-job-complete', {'device': 'job1'}), ('wait', 'job1', 'concluded')]

QEMU's qmp-shell reads the same syntax but keeps quotes as part of a value, so a string with a space (an
HMP ``command-line``) cannot be sent through it: such a line gets a note before it, and
``qmp_shell_sends_as_written`` tells a replay which commands those are.  qmp-shell reports each ``#`` note as
a line it cannot parse and goes on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from qblocknb.model.qmpshell import format_line, parse_line

WAIT = "# wait: "
QUOTED_NOTE = "# qmp-shell would send the quotes below as part of the value; vm.shell() reads them as meant"


@dataclass(frozen=True)
class Entry:
    """A command as the session sent it: when, what, and how QEMU answered."""

    time: float
    command: str
    arguments: dict
    error: str = ""  # QEMU's refusal; empty when it was done


@dataclass(frozen=True)
class Mark:
    """A job reached ``status`` (``ready`` or ``concluded``) at ``time``, by QEMU's clock."""

    time: float
    job: str
    status: str


def replayed(entry: Entry) -> bool:
    """Queries change nothing and refused commands did nothing: a replay leaves both out."""
    return not entry.command.startswith("query-") and not entry.error


def waits_before(entries: Sequence[Entry], marks: Sequence[Mark]) -> list[list[Mark]]:
    """For each entry, and once more for the end, each job's last mark since the entry before.

    Only a job's last status in each gap counts: a job that became ready and ended there is waited to its end.
    """
    times = [entry.time for entry in entries] + [float("inf")]
    gaps: list[list[Mark]] = []
    previous = float("-inf")
    for until in times:
        last: dict[str, Mark] = {}
        for mark in sorted(marks, key=lambda m: m.time):
            if previous < mark.time <= until:
                last[mark.job] = mark
        gaps.append(list(last.values()))
        previous = until
    return gaps


def script_text(entries: Sequence[Entry], marks: Sequence[Mark] = ()) -> str:
    """The script: one qmp-shell line per replayed command, notes for the rest and for the waits."""
    lines: list[str] = []
    gaps = waits_before(entries, marks)
    for entry, waits in zip(entries, gaps, strict=False):
        lines += [f"{WAIT}{mark.job} {mark.status}" for mark in waits]
        line = format_line(entry.command, entry.arguments)
        if entry.command.startswith("query-"):
            lines.append(f"# {line}")
        elif entry.error:
            lines += [f"# refused: {' '.join(entry.error.split())}", f"# {line}"]
        else:
            sendable = qmp_shell_sends_as_written(entry.command, entry.arguments)
            lines += ([] if sendable else [QUOTED_NOTE]) + [line]
    lines += [f"{WAIT}{mark.job} {mark.status}" for mark in gaps[-1]]
    return "\n".join(lines)


def read_script(text: str) -> list[tuple[str, object, object]]:
    """The script's steps: ``("command", name, arguments)`` and ``("wait", job, status)``; other notes skipped."""
    steps: list[tuple[str, object, object]] = []
    for line in text.splitlines():
        if line.startswith(WAIT):
            job, status = line[len(WAIT) :].split()
            steps.append(("wait", job, status))
        elif line.strip() and not line.lstrip().startswith("#"):
            steps.append(("command", *parse_line(line)))
    return steps


def qmp_shell_sends_as_written(command: str, arguments: dict) -> bool:
    """False when qmp-shell would read a value differently: it keeps a quoted string's quotes.

    Objects and lists go as JSON, which both read alike; a string is safe when it is written bare.
    """
    return all(
        not isinstance(value, str) or format_line(command, {key: value}) == f"{command} {key}={value}"
        for key, value in arguments.items()
    )
