"""``make soak``: many more random sequences than ``make test`` runs, and the figures for docs/reliability.md.

The sequences and their checks are those of tests/test_random_sequences.py (``tests/random_sequences.py``), drawn
afresh (not derandomized) and longer, in batches until ``SOAK_MINUTES`` (default 10) have passed; a share of the
time (``SOAK_GUEST_SHARE``, default 0.25) goes to job sequences under the tiny guest's writer, where the guest OS
is installed. A failing sequence is shrunk by hypothesis and its reproducer, the toolkit calls, kept; the soak goes
on. The figures are printed as Markdown, and written to ``--write FILE`` too::

    SOAK_MINUTES=8 .venv/bin/python tools/soak.py --write build/soak.md
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from random_sequences import GUEST_CLUSTERS, Stats, run_sequence, sequences

from qblocknb.live import guestimage

# Examples per hypothesis run: each run starts with the simplest sequence, so not too few; short enough to stop
# near the deadline.
PLAIN_BATCH, GUEST_BATCH = 25, 4
MAX_OPERATIONS = 30  # per sequence, after the seed-like start (make test draws up to 16)


class Soak:
    """Batches of sequences until the deadline, each kind with its own figures."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.plain, self.guest = Stats(), Stats()
        self.seconds = {"plain": 0.0, "guest": 0.0}
        self.failures: list[str] = []
        self.made = 0

    def batch(self, kind: str, strategy: st.SearchStrategy, examples: int, guest: bool) -> None:
        """One hypothesis run of ``examples`` sequences; a failure is kept with the reproducer of the shrunk one."""
        stats = self.guest if guest else self.plain
        last: list[list] = []

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            print_blob=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(ops=strategy)
        def sequence(ops: list) -> None:
            last[:] = [ops]
            self.made += 1
            run_sequence(ops, self.folder / f"{kind}-{self.made}", guest=guest, stats=stats)

        started = time.monotonic()
        try:
            sequence()
        except Exception as error:  # any failure is a finding to report, not a reason to stop the soak
            shrunk = f"{last[0]!r}" if last else "(none)"
            self.failures.append(f"{kind}: {type(error).__name__}: {error}\nshrunk sequence: {shrunk}")
            print(self.failures[-1], file=sys.stderr)
        self.seconds[kind] += time.monotonic() - started

    def run(self, minutes: float, guest_share: float) -> None:
        deadline = time.monotonic() + minutes * 60
        plain = sequences(max_size=MAX_OPERATIONS)
        guest = sequences(GUEST_CLUSTERS, max_size=MAX_OPERATIONS // 3, writes=False)
        while time.monotonic() < deadline:
            spent = sum(self.seconds.values())
            if guest_share > 0 and self.seconds["guest"] < guest_share * spent:
                self.batch("guest", guest, GUEST_BATCH, guest=True)
            else:
                self.batch("plain", plain, PLAIN_BATCH, guest=False)
            print(f"soak: {self.plain.sequences} + {self.guest.sequences} (guest) sequences", file=sys.stderr)


def guest_available() -> str | None:
    """None when the tiny guest can boot here, else why not."""
    try:
        guestimage.boot_files()
    except guestimage.GuestImageError as error:
        return str(error)
    return None


def qemu_version() -> str:
    done = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True)
    return done.stdout.splitlines()[0]


def figures(soak: Soak, minutes: float, seconds: float, command: str, no_guest: str | None) -> str:
    both = soak.plain.operations + soak.guest.operations
    gib = (soak.plain.bytes_verified + soak.guest.bytes_verified) / (1 << 30)
    written = soak.guest.writer_records_written
    rows: list[tuple[str, str]] = [
        ("command", f"`{command}`"),
        ("QEMU", qemu_version()),
        ("duration", f"{seconds / 60:.1f} min (SOAK_MINUTES={minutes:g})"),
        ("sequences", f"{soak.plain.sequences} without a guest OS, {soak.guest.sequences} under the guest's writer"),
        ("operations", f"{sum(both.values())} ({sum(soak.guest.operations.values())} of them under the writer)"),
        ("operations passed over (did not fit the chain)", str(soak.plain.passed_over + soak.guest.passed_over)),
        ("bytes verified against the model", f"{gib:.1f} GiB"),
        ("guest writer", f"{written} records written; each sequence's last round read back intact"),
        ("failures", str(len(soak.failures))),
    ]
    if no_guest:
        rows.append(("guest", f"not run: {no_guest}"))
    lines = ["| figure | value |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    lines += ["", "| operation | count | under the writer |", "|---|---:|---:|"]
    lines += [f"| {kind} | {count} | {soak.guest.operations[kind]} |" for kind, count in sorted(both.items())]
    for failure in soak.failures:
        lines += ["", "```", failure, "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="also write the figures (Markdown) to this file")
    args = parser.parse_args(argv)
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    no_guest = guest_available()
    share = 0.0 if no_guest else float(os.environ.get("SOAK_GUEST_SHARE", "0.25"))
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qblocknb-soak-") as folder:
        soak = Soak(Path(folder))
        soak.run(minutes, share)
    share_set = [f"SOAK_GUEST_SHARE={os.environ['SOAK_GUEST_SHARE']}"] if "SOAK_GUEST_SHARE" in os.environ else []
    command = " ".join([f"SOAK_MINUTES={minutes:g}", *share_set, "make soak"])
    text = figures(soak, minutes, time.monotonic() - started, command, no_guest)
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
