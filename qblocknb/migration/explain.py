"""Why a live storage migration stopped: the failed step in words, and the state of each side.

QEMU's own messages name the symptom ("Connection refused", "Permission
denied"); ``diagnose`` names the cause in the migration's terms and what to do::

    >>> diagnose("drive-mirror", "Could not open image: Permission denied", "node-TargetDisk", "127.0.0.1:10809").why
    "the destination exports 'node-TargetDisk' read-only"
    >>> diagnose("migrate", "Failed to connect to '10.0.0.2:4444': Connection refused", "", "10.0.0.2:4444").why
    'the destination is not waiting for an incoming migration at 10.0.0.2:4444'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qblocknb.errors import Error

if TYPE_CHECKING:
    from qblocknb.live.machine import Machine

NOT_LISTENING = ("connection refused", "failed to connect", "no route to host", "timed out", "unreachable")
RUN_STATES = {
    "inmigrate": "waiting for an incoming migration",
    "postmigrate": "stopped after sending its state away",
    "prelaunch": "paused since launch (-S)",
    "paused": "paused",
    "running": "running",
    "finish-migrate": "finishing a migration",
    "io-error": "stopped on an I/O error",
}


@dataclass(frozen=True)
class Diagnosis:
    """The cause of a failed step and what to do about it."""

    why: str
    todo: str


# (commands the rule applies to, words in QEMU's message, why, what to do); the first match wins.
RULES: tuple[tuple[tuple[str, ...], tuple[str, ...], str, str], ...] = (
    (
        ("drive-mirror",),
        NOT_LISTENING,
        "the destination is not listening for NBD at {address}",
        "start the destination's NBD server first (nbd-server-start) on that address, and check the port",
    ),
    (
        ("drive-mirror",),
        ("permission denied", "read-only", "read only"),
        "the destination exports '{export}' read-only",
        "export it with nbd-server-add writable=true (the seed's JSON leaves writable out)",
    ),
    (
        ("drive-mirror",),
        ("export not available", "not present", "unknown export"),
        "the destination exports no disk named '{export}'",
        "export the target node first (nbd-server-add device=... writable=true)",
    ),
    (
        ("drive-mirror", "migrate", "query-migrate"),
        ("tls",),
        "the two sides do not agree on TLS",
        "pass the same credentials folder as tls= so that both sides load it, or leave TLS off on both",
    ),
    (
        ("nbd-server-start",),
        ("address already in use",),
        "port {address} is already taken on the destination's host",
        "pass another nbd_port",
    ),
    (
        ("nbd-server-start",),
        ("cannot assign requested address",),
        "the destination's host has no address {address}",
        "pass one of the destination's own addresses as host=",
    ),
    (
        ("nbd-server-start",),
        ("already running",),
        "the destination's NBD server already runs",
        "stop it with nbd-server-stop, or reuse it and skip this step",
    ),
    (
        ("BLOCK_JOB_READY",),
        (),
        "the mirror job is not READY",
        "migrate only after BLOCK_JOB_READY; wait longer, or raise the mirror's speed with job.set_speed()",
    ),
    (
        ("migrate", "query-migrate"),
        NOT_LISTENING,
        "the destination is not waiting for an incoming migration at {address}",
        "launch it with incoming='tcp:HOST:0' (qb.launch_destination does) and migrate to that address",
    ),
    (
        ("migrate", "query-migrate"),
        (),
        "the migration of the VM state failed",
        "the mirror still runs, so the source is intact: look at both QEMU logs, then call migrate again",
    ),
)


def diagnose(command: str, message: str, export: str, address: str) -> Diagnosis:
    """The cause of ``message`` from ``command``, in the words of the migration."""
    lowered = message.lower()
    for commands, words, why, todo in RULES:
        if command in commands and (not words or any(word in lowered for word in words)):
            return Diagnosis(why.format(export=export, address=address), todo)
    return Diagnosis(f"{command} failed", "look at the QEMU log of that side")


def side_state(vm: Machine, role: str, extra: str = "") -> str:
    """One clause on what a QEMU is doing now: run state, block jobs, migration, NBD exports."""
    gone = vm.gone_error(f"asking the {role} for its state")
    if gone is not None:
        return f"the {role} QEMU is no longer running"
    try:
        status = vm.query("query-status")["status"]
        jobs = vm.query("query-block-jobs")
        migration = vm.query("query-migrate").get("status", "none")
        exports = [e["id"] for e in vm.query("query-block-exports")] if vm.has_command("query-block-exports") else []
    except Error as error:
        return f"the {role} does not answer ({error})"
    parts = [f"the {role} is {RUN_STATES.get(status, status)}"]
    parts += [f"{j['type']} job {j['device']} is {j['status']} at {_percent(j)}" for j in jobs] or ["has no block job"]
    if migration != "none":
        parts.append(f"migration {migration}")
    if exports:
        parts.append(f"exports {', '.join(exports)}")
    if extra:
        parts.append(extra)
    return ", ".join(parts)


def _percent(job: dict) -> str:
    return f"{job['offset'] / job['len']:.0%}" if job.get("len") else "0%"


def authority(migrated: bool, resumed: bool) -> str:
    """Which side holds the disk a guest should trust now."""
    if resumed:
        return "the destination runs the guest and owns the disk"
    if migrated:
        return "the destination holds the guest's state and disk but is paused; cont resumes it"
    return "the source still holds the only complete disk"
