"""A fleet's reads as pandas frames: one row per disk of every domain, and one per running block job.

A host that could not be read is one row with its ``error`` and nothing else, so a table of the fleet
always shows every host it was asked about.
"""

from __future__ import annotations

import pandas as pd

from qblocknb.fleet.reads import JOB_KINDS, DomainState, HostRead

DISK_COLUMNS = [
    "host",
    "domain",
    "state",
    "disk",
    "chain",
    "depth",
    "virtual",
    "allocated",
    "checkpoints",
    "job",
    "progress",
    "source",
    "error",
]
JOB_COLUMNS = ["host", "domain", "disk", "job", "cur", "end", "progress", "bandwidth"]


def disk_rows(reads: list[HostRead]) -> list[dict]:
    """One dict per disk of every domain (``DISK_COLUMNS``); one per unreadable host, with its error."""
    rows = []
    for read in reads:
        if read.error:
            rows.append({"host": read.host, "error": read.error})
            continue
        for domain in read.domains:
            rows += [_disk_row(domain, target) for target in (disk.target for disk in domain.disks)]
    return rows


def _disk_row(domain: DomainState, target: str) -> dict:
    chain = domain.chain(target)
    info = domain.jobs.get(target) or {}
    return {
        "host": domain.host,
        "domain": domain.name,
        "state": domain.state,
        "disk": target,
        "chain": str(chain),
        "depth": len(chain),
        "virtual": chain.active.virtual_size,
        "allocated": sum(image.allocated_size or 0 for image in chain),
        "checkpoints": len(domain.checkpoints),
        "job": JOB_KINDS.get(info.get("type"), "") if info else "",
        "progress": _fraction(info) if info else None,
        "source": domain.source,
        "error": "",
    }


def disks_frame(reads: list[HostRead]) -> pd.DataFrame:
    frame = pd.DataFrame(disk_rows(reads), columns=DISK_COLUMNS)
    for column in ("depth", "virtual", "allocated", "checkpoints"):
        frame[column] = frame[column].astype("Int64")
    frame["error"] = frame["error"].fillna("")
    return frame


def jobs_frame(reads: list[HostRead]) -> pd.DataFrame:
    """Every block job on every host: kind, ``cur``/``end`` bytes, progress and bandwidth (bytes/s)."""
    rows = [
        {
            "host": domain.host,
            "domain": domain.name,
            "disk": target,
            "job": JOB_KINDS.get(info.get("type"), str(info.get("type"))),
            "cur": info.get("cur", 0),
            "end": info.get("end", 0),
            "progress": _fraction(info),
            "bandwidth": info.get("bandwidth", 0),
        }
        for read in reads
        for domain in read.domains
        for target, info in domain.jobs.items()
    ]
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def _fraction(info: dict) -> float:
    end = info.get("end", 0)
    return info.get("cur", 0) / end if end else 0.0
