"""Pre-flight checks that need the QEMU's own answers: its argument names, its formats, its jobs.

The chain checks (``qblocknb.model.checks``) know nothing of the QEMU; these ask its schema (read once) or a
quiet ``query-jobs``, so that a misspelt argument, a format QEMU does not have, a format that disagrees with an
existing target, or a job verb for a job that does not exist is refused as a sentence before anything is sent.
"""

from __future__ import annotations

import difflib
import warnings
from typing import TYPE_CHECKING, Protocol

from qblocknb.errors import InputError
from qblocknb.live import images
from qblocknb.live.ports import HostPaths, Querier
from qblocknb.model.nbd import is_protocol
from qblocknb.model.predict import SNAPSHOT
from qblocknb.model.qmpargs import IMAGE_FORMATS
from qblocknb.model.vocabulary import JOB_COMMANDS, VERB_COMMANDS

if TYPE_CHECKING:
    from qblocknb.live.jobregistry import JobRegistry
    from qblocknb.live.schema import Schema

CHECKED = {*JOB_COMMANDS, *VERB_COMMANDS, SNAPSHOT}


class CheckSource(Querier, HostPaths, Protocol):
    """What the checks read: the schema (names, drivers), the jobs this session runs, quiet queries, host files."""

    schema: Schema
    registry: JobRegistry


def check_command(vm: CheckSource, command: str, arguments: dict) -> None:
    """Raise InputError for what this QEMU would refuse in a job, verb or snapshot command; return quietly else.

    A ``cont`` that QEMU would accept without effect (on a QEMU waiting for an incoming migration) is warned of.
    """
    if command == "cont":
        _check_cont(vm)
    if command not in CHECKED:
        return
    _check_names(vm, command, arguments)
    _check_format(vm, command, arguments)
    if command in VERB_COMMANDS:
        _check_job_exists(vm, command, arguments)


def _check_names(vm: CheckSource, command: str, arguments: dict) -> None:
    if vm.schema.accepts(command, set(arguments)):
        return
    known = vm.schema.arguments(command)
    unknown = sorted(set(arguments) - known) if known else []
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        raise InputError(
            f"{command}: argument '{unknown[0]}' is not one this QEMU knows",
            f"{command} takes {', '.join(sorted(known))}",
            f"did you mean {close[0]}?" if close else "leave it out",
        )


def _check_format(vm: CheckSource, command: str, arguments: dict) -> None:
    fmt = arguments.get("format")
    if fmt is None:
        return
    drivers = set() if vm.schema.accepts(command, set(), fmt) else vm.schema.drivers
    if drivers and fmt not in drivers:
        close = difflib.get_close_matches(str(fmt), sorted(drivers), n=2)
        likely = sorted(close, key=lambda name: name not in IMAGE_FORMATS) or sorted(IMAGE_FORMATS)
        raise InputError(
            f"{command}: format '{fmt}' is not one this QEMU knows",
            f"its block drivers include {', '.join(likely)}",
            f"pass format='{likely[0]}', or leave format out to keep the source's",
        )
    name = arguments.get("target") if command in JOB_COMMANDS else arguments.get("snapshot-file")
    if arguments.get("mode") != "existing" or not isinstance(name, str) or is_protocol(name):
        return
    path = vm.host_path(name)
    if path.is_file():
        actual = images.detect_format(path)
        if actual != fmt:
            raise InputError(
                f"{command}: format '{fmt}' disagrees with '{name}'",
                f"qemu-img finds {actual} in that file, and QEMU would write {fmt} into it",
                f"pass format='{actual}', or leave format out",
            )


def _check_job_exists(vm: CheckSource, command: str, arguments: dict) -> None:
    """A verb for a job QEMU does not have (the Job objects were asked already: this is for ended or foreign ids)."""
    key = "device" if command.startswith("block-job-") else "id"
    job_id = arguments.get(key)
    if vm.registry.running(job_id) is not None:
        return
    jobs = vm.query("query-jobs") if vm.has_command("query-jobs") else []
    ids = [job["id"] for job in jobs] or [job["device"] for job in vm.query("query-block-jobs")]
    if job_id not in ids:
        raise InputError(
            f"{command}: there is no job '{job_id}'" if job_id else f"{command} needs {key}= the job's id",
            f"QEMU's jobs are {', '.join(ids) or 'none'}",
            "pick one of those (vm.job_list lists this session's)",
        )


# An incoming migration under way (10.0 reports "setup" while it only listens: that is not one)
INCOMING = ("active", "device", "postcopy-active", "postcopy-paused", "postcopy-recover", "completed")


def _check_cont(vm: CheckSource) -> None:
    """``cont`` on a QEMU started with ``-incoming`` succeeds and only arms autostart: the guest never runs.

    A warning, not a refusal: once a migration is under way (or just done) the ``cont`` is right.
    """
    if not vm.has_command("query-status") or vm.query("query-status").get("status") != "inmigrate":
        return
    if vm.has_command("query-migrate") and vm.query("query-migrate").get("status") in INCOMING:
        return
    warnings.warn(
        "cont on this QEMU does not start the guest: it waits for an incoming migration (started with -incoming, "
        "query-status inmigrate), so QEMU only arms autostart; run migrate on the source to this QEMU's address "
        "first, and the guest runs once it completes",
        UserWarning,
        stacklevel=4,
    )
