"""qblocknb's libvirt-native jobs against virsh's, and the delay from libvirt's event to a ``JobMonitor``.

Jobs: a persistent domain (``qblocknb.live.libvirtguest.domain_xml``, paused: no guest writes) on a fresh copy of
one chain, a 256 MiB base holding 128 MiB and an overlay holding 64 MiB more, built offline with qemu-img and
qemu-io.  Each round runs, in alternating order, the seed's stream (``vm.block_stream`` + ``job.wait()`` through
``qb.connect_libvirt``, against ``virsh blockpull --wait``) and an active commit to READY then pivot
(``vm.block_commit`` + ``wait_ready`` + ``complete`` + ``wait``, against ``virsh blockcommit --active --wait
--pivot``), all throttled to the same bandwidth so that the throttle, not the tool, sets the pace.  After each
job the domain is destroyed and the image it ended on is compared with ``qemu-img compare`` against a reference
holding both layers' data: a fast wrong run raises instead of counting.

Delay: on one domain, short jobs (a throttled mirror of 1 MiB to a new image, to READY, then a pivot); a callback
of our own on a second connection (opened after ``start_event_loop``) stamps each
``BLOCK_JOB_2`` READY and COMPLETED as libvirt's event thread delivers it, and an observer on the
``JobMonitor``'s ``status`` trait stamps when it first shows ``ready`` and the outcome ``completed``::

    .venv/bin/python bench/libvirtnative.py                 # 5 rounds, 24 delay jobs, about 2.5 minutes
    .venv/bin/python bench/libvirtnative.py --rounds 7 --jobs 40
    .venv/bin/python bench/run.py --only libvirt            # the defaults, written into docs/benchmarks.md

(Not ``bench/libvirt.py``: a script's folder comes first on ``sys.path``, so that name would hide libvirt-python
from every bench run from this folder.)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stats import median, p99

import qblocknb as qb
from qblocknb.live.libvirtguest import domain_xml
from qblocknb.qmp.libvirt import start_event_loop
from qblocknb.widgets import JobMonitor

URI = "qemu:///system"
MiB = 1 << 20
DISK = "256M"
BASE_DATA = (0, 128 * MiB, 0xA1)  # offset, length, pattern: what the base holds
TOP_DATA = (128 * MiB, 64 * MiB, 0xB2)  # what the overlay adds (no overlap: the stream copies all of the base's)
SPEED = 64 * MiB  # bytes/s: the stream moves 128 MiB in ~2 s, the commit 64 MiB in ~1 s
ROUNDS = 5
DELAY_JOBS = 24
DELAY_SPEED = 4 * MiB  # the delay's mirrors of 1 MiB: READY ~250 ms after the command, well after it returned
TARGET = 1.1  # qblocknb at most 1.1x virsh's wall time for the same job
JOB_TIMEOUT = 60.0
VARIANTS = ("stream", "commit")
TOOLS = ("qblocknb", "virsh")
TITLE = "libvirt-native jobs vs virsh, and libvirt's events to a JobMonitor"


def run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def write(image: Path, offset: int, length: int, pattern: int) -> None:
    run("qemu-io", "-f", "qcow2", "-c", f"write -P {pattern:#x} {offset} {length}", str(image))


def build_template(folder: Path) -> tuple[Path, Path]:
    """``base.qcow2 <-- top.qcow2`` (relative backing, so copies stay chains) and a flat reference of both."""
    folder.mkdir(parents=True)
    base, top, reference = folder / "base.qcow2", folder / "top.qcow2", folder / "reference.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(base), DISK)
    write(base, *BASE_DATA)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(top))
    write(top, *TOP_DATA)
    run("qemu-img", "create", "-q", "-f", "qcow2", str(reference), DISK)
    write(reference, *BASE_DATA)
    write(reference, *TOP_DATA)
    return folder, reference


class Events:
    """``BLOCK_JOB_2`` as our own connection's callback sees it: per domain, (status, perf_counter) in order."""

    def __init__(self, libvirt: Any) -> None:
        self.libvirt = libvirt
        self.seen: dict[str, list[tuple[int, float]]] = {}
        self.lock = threading.Lock()
        self.conn = libvirt.open(URI)  # after start_event_loop(): its callbacks run on libvirt's event thread
        self.callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, self._on_block_job, None
        )

    def _on_block_job(self, conn: Any, dom: Any, disk: str, job_type: int, status: int, opaque: Any) -> None:
        at = time.perf_counter()  # first thing: the moment libvirt delivered the event to this process
        with self.lock:
            self.seen.setdefault(dom.name(), []).append((status, at))

    def first(self, name: str, status: int, after: float = 0.0) -> float | None:
        with self.lock:
            return next((at for s, at in self.seen.get(name, []) if s == status and at >= after), None)

    def close(self) -> None:
        with contextlib.suppress(self.libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self.callback)
        self.conn.close()


class Domains:
    """Persistent test domains, each on a fresh copy of the template chain; destroyed and undefined at the end."""

    def __init__(self, libvirt: Any, conn: Any, root: Path) -> None:
        self.libvirt, self.conn, self.root = libvirt, conn, root
        self.made: list[Any] = []

    def fresh(self, template: Path, label: str) -> tuple[str, Any, Path]:
        folder = self.root / f"{label}-{len(self.made)}"
        folder.mkdir()
        for name in ("base.qcow2", "top.qcow2"):
            shutil.copyfile(template / name, folder / name)
        return (*self.define(folder / "top.qcow2"), folder)

    def define(self, image: Path) -> tuple[str, Any]:
        name = f"qblocknb-bench-{uuid.uuid4().hex[:8]}"
        dom = self.conn.defineXML(domain_xml(name, image))
        self.made.append(dom)
        dom.createWithFlags(self.libvirt.VIR_DOMAIN_START_PAUSED)
        return name, dom

    def remove(self, dom: Any) -> None:
        libvirt = self.libvirt
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        flags = libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        with contextlib.suppress(libvirt.libvirtError):
            dom.undefineFlags(flags)

    def close(self) -> None:
        for dom in reversed(self.made):
            self.remove(dom)


def active_file(dom: Any) -> str:
    """The file vda's guest reads first, from libvirt's live XML."""
    xml = dom.XMLDesc(0)
    disk = xml[xml.index("<disk") : xml.index("</disk>")].split("<mirror")[0]
    return re.findall(r"<source file='([^']+)'", disk)[0]


def check(dom: Any, folder: Path, variant: str, reference: Path) -> None:
    """The domain ended on the right image, which holds exactly both layers' data; else the run does not count."""
    expected = folder / ("top.qcow2" if variant == "stream" else "base.qcow2")
    active = active_file(dom)
    if active != str(expected):
        raise RuntimeError(f"{variant}: the domain ended on {active}, not {expected}")
    dom.destroy()  # QEMU caches qcow2 metadata while it runs: read the file once it is closed
    info = run("qemu-img", "info", "--output=json", str(expected))
    if '"backing-filename"' in info:
        raise RuntimeError(f"{variant}: {expected.name} still has a backing file")
    done = subprocess.run(["qemu-img", "compare", "-q", str(reference), str(expected)], capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{variant}: {expected.name} differs from the reference (qemu-img compare: {done.returncode})"
        )


def timed_qblocknb(name: str, variant: str, events: Events, libvirt: Any) -> dict[str, float]:
    """One job through qb.connect_libvirt, from the call to the return of its wait (connecting is not timed)."""
    vm = qb.connect_libvirt(name, URI)
    try:
        started = time.perf_counter()
        if variant == "stream":
            job = vm.block_stream(device="vda", speed=SPEED)
            sent = time.perf_counter()
            job.wait(timeout=JOB_TIMEOUT)
        else:
            job = vm.block_commit(device="vda", speed=SPEED)
            sent = time.perf_counter()
            job.wait_ready(timeout=JOB_TIMEOUT)
            job.complete()
            job.wait(timeout=JOB_TIMEOUT)
        ended = time.perf_counter()
        if job.outcome != "completed":
            raise RuntimeError(f"{variant} through qblocknb ended {job.outcome}: {job.error}")
    finally:
        vm.session.close()
    return split(name, started, ended, events, libvirt) | {"command": sent - started}


def timed_virsh(name: str, variant: str, events: Events, libvirt: Any) -> dict[str, float]:
    """The same job as virsh runs it, waiting for the end itself: the wall time of the virsh process."""
    bandwidth = ["--bandwidth", str(SPEED), "--bytes", "--wait"]
    if variant == "stream":
        command = ["virsh", "-c", URI, "blockpull", name, "vda", *bandwidth]
    else:
        command = ["virsh", "-c", URI, "blockcommit", name, "vda", "--active", "--pivot", *bandwidth]
    started = time.perf_counter()
    run(*command)
    ended = time.perf_counter()
    return split(name, started, ended, events, libvirt)


def split(name: str, started: float, ended: float, events: Events, libvirt: Any) -> dict[str, float]:
    """Whole time, and when libvirt's READY and final events came: where the tool, not the job, spent time."""
    ready = events.first(name, libvirt.VIR_DOMAIN_BLOCK_JOB_READY, started)
    final = events.first(name, libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED, started)
    if final is None:  # our callback can trail the tool's by a hair: give it a moment
        deadline = time.perf_counter() + 1
        while final is None and time.perf_counter() < deadline:
            time.sleep(0.005)
            final = events.first(name, libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED, started)
    figures = {"total": ended - started}
    if ready is not None:
        figures["to ready"] = ready - started
    if final is not None:
        figures["after end"] = ended - final
    if ready is not None and final is not None:
        figures["ready to end"] = final - ready
    return figures


def bench_jobs(
    libvirt: Any, domains: Domains, events: Events, template: Path, reference: Path, rounds: int
) -> tuple[dict, list[float]]:
    """``{(variant, tool): [figures per run]}``, order alternating by round; and virsh's start-up time."""
    results: dict[tuple[str, str], list[dict[str, float]]] = {(v, t): [] for v in VARIANTS for t in TOOLS}
    startup: list[float] = []
    timers: dict[str, Callable[..., dict[str, float]]] = {"qblocknb": timed_qblocknb, "virsh": timed_virsh}
    for number in range(rounds):
        tools = TOOLS if number % 2 == 0 else TOOLS[::-1]
        for variant in VARIANTS:
            for tool in tools:
                name, dom, folder = domains.fresh(template, f"{variant}-{tool}")
                if tool == "virsh":  # what every virsh command pays before it does anything: start and connect
                    started = time.perf_counter()
                    run("virsh", "-c", URI, "domstate", name)
                    startup.append(time.perf_counter() - started)
                results[(variant, tool)].append(timers[tool](name, variant, events, libvirt))
                check(dom, folder, variant, reference)
                domains.remove(dom)
                shutil.rmtree(folder)
        print(f"  round {number + 1}/{rounds} done", flush=True)
    return results, startup


def bench_delay(
    libvirt: Any, domains: Domains, events: Events, root: Path, jobs: int
) -> tuple[dict[str, list[float]], list[str]]:
    """Delays in ms from our BLOCK_JOB_2 callback to the monitor's status trait, for READY and COMPLETED; and
    the jobs not measured, saying which side never saw the moment (so that a gap is explained, not dropped).

    Each job mirrors the disk (1 MiB of data) to a new image, throttled so that READY comes a few hundred ms
    after the command, then pivots to it; the next job mirrors that image.
    """
    folder = root / "delay"
    folder.mkdir()
    top = folder / "base.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", str(top), "16M")
    write(top, 0, MiB, 0xA1)
    name, dom = domains.define(top)
    vm = qb.connect_libvirt(name, URI)
    delays: dict[str, list[float]] = {"ready": [], "completed": []}
    missed: list[str] = []
    try:
        for number in range(jobs):
            target = folder / f"m{number}.qcow2"
            arguments = {
                "device": "vda",
                "job-id": f"m{number}",
                "target": str(target),
                "sync": "full",
                "format": "qcow2",
                "speed": DELAY_SPEED,
            }
            job = vm.expect_job("drive-mirror", arguments)
            monitor = JobMonitor(job, plot=False)
            shown: dict[str, float] = {}

            def seen(change: dict, shown: dict[str, float] = shown) -> None:
                at = time.perf_counter()
                if "<b>ready</b>" in change["new"]:
                    shown.setdefault("ready", at)
                if ">completed</span>" in change["new"]:
                    shown.setdefault("completed", at)

            monitor.status.observe(seen, "value")
            started = time.perf_counter()
            try:
                vm.send("drive-mirror", arguments)
            except Exception:
                vm.forget_job(job)
                raise
            job.wait_ready(timeout=JOB_TIMEOUT)
            job.complete()
            job.wait(timeout=JOB_TIMEOUT)
            _wait_for(lambda shown=shown: "completed" in shown, 5)
            monitor.close()
            for status, word in (
                (libvirt.VIR_DOMAIN_BLOCK_JOB_READY, "ready"),
                (libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED, "completed"),
            ):
                fired = events.first(name, status, started)
                if fired is not None and word in shown:
                    delays[word].append((shown[word] - fired) * 1000)
                elif fired is None:
                    missed.append(f"{job.id} {word}: our callback saw no {word.upper()} event")
                else:
                    last = re.sub(r"<[^>]+>", "", monitor.status.value)
                    missed.append(f"{job.id} {word}: the monitor never showed it (it showed '{last}')")
            top.unlink()  # the image the pivot left
            top = target
    finally:
        vm.session.close()
    if active_file(dom) != str(top):
        raise RuntimeError(f"after the delay jobs the domain runs on {active_file(dom)}, not {top}")
    domains.remove(dom)
    return delays, missed


def _wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)


def bench_libvirt(root: Path, rounds: int = ROUNDS, jobs: int = DELAY_JOBS) -> tuple[list[dict], list[dict], dict]:
    """The jobs table, the delay table, and figures for the text (ratios, versions, load)."""
    import libvirt

    start_event_loop()
    conn = libvirt.open(URI)
    events = Events(libvirt)
    domains = Domains(libvirt, conn, root)
    figures: dict[str, Any] = {
        "libvirt": _version(conn.getLibVersion()),
        "qemu": _version(conn.getVersion()),
        "load before": os.getloadavg()[0],
    }
    started = time.monotonic()
    try:
        template, reference = build_template(root / "template")
        results, startup = bench_jobs(libvirt, domains, events, template, reference, rounds)
        delays, figures["missed"] = bench_delay(libvirt, domains, events, root, jobs)
    finally:
        domains.close()
        events.close()
        conn.close()
    figures |= {"load after": os.getloadavg()[0], "seconds": time.monotonic() - started, "rounds": rounds}
    figures["virsh startup ms"] = median(startup) * 1000
    return _job_rows(results, figures), _delay_rows(delays, figures), figures


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _job_rows(results: dict, figures: dict) -> list[dict]:
    rows = []
    for variant in VARIANTS:
        baseline = median([r["total"] for r in results[(variant, "virsh")]])
        for tool in TOOLS:
            runs = results[(variant, tool)]
            totals = [r["total"] for r in runs]
            readies = [r["to ready"] for r in runs if "to ready" in r]
            pivots = [r["ready to end"] * 1000 for r in runs if "ready to end" in r]
            afters = [r["after end"] * 1000 for r in runs if "after end" in r]
            commands = [r["command"] * 1000 for r in runs if "command" in r]
            ratio = median(totals) / baseline
            if tool == "qblocknb":
                figures[f"{variant} ratio"] = ratio
            rows.append(
                {
                    "job": "stream, whole chain" if variant == "stream" else "active commit, pivot",
                    "tool": tool,
                    "runs": len(runs),
                    "median s": f"{median(totals):.2f}",
                    "min–max s": f"{min(totals):.2f}–{max(totals):.2f}",
                    "command returned, median ms": f"{median(commands):.0f}" if commands else "",
                    "libvirt's READY, median s": f"{median(readies):.2f}" if readies else "",
                    "READY to libvirt's end, median ms": f"{median(pivots):.0f}" if pivots else "",
                    "libvirt's end to return, median ms": f"{median(afters):.0f}" if afters else "n/a",
                    "ratio to virsh": f"{ratio:.2f}×",
                }
            )
    return rows


def _delay_rows(delays: dict[str, list[float]], figures: dict) -> list[dict]:
    rows = []
    for word, values in delays.items():
        rows.append(
            {
                "libvirt event → monitor shows": "READY → ready" if word == "ready" else "COMPLETED → completed",
                "jobs measured": len(values),
                "median ms": f"{median(values):.2f}" if values else "n/a",
                "p99 ms": f"{p99(values):.2f}" if values else "n/a",
                "min ms": f"{min(values):.2f}" if values else "n/a",
                "max ms": f"{max(values):.2f}" if values else "n/a",
            }
        )
        if values:
            figures[f"{word} p99 ms"] = p99(values)
    return rows


def section(command: str, rows: list[dict], delays: list[dict], figures: dict, markdown: Callable, source: str) -> str:
    """The docs/benchmarks.md section: what was run, on what, the two tables, and what they say."""
    verdicts = []
    for variant in VARIANTS:
        ratio = figures[f"{variant} ratio"]
        verdicts.append(f"{variant} {ratio:.2f}× ({'met' if ratio <= TARGET else 'missed'})")
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"## {TITLE}\n\n"
        f"`{command}` on {datetime.date.today().isoformat()}: {cpu} ({os.cpu_count()} cores), libvirt "
        f"{figures['libvirt']}, QEMU {figures['qemu']} (the domains' hypervisor), qblocknb at {source}, "
        f"{figures['seconds']:.0f} s in all; "
        f"load average {figures['load before']:.2f} before and {figures['load after']:.2f} after (the machine is "
        "shared with other test runs).\n\n"
        f"Each job runs on a fresh persistent domain (paused, static DAC label) over a fresh copy of one chain: a "
        f"{DISK[:-1]} MiB base holding {BASE_DATA[1] // MiB} MiB and an overlay holding {TOP_DATA[1] // MiB} MiB more, "
        f"built offline with qemu-img and qemu-io. Throttled to {SPEED // MiB} MiB/s in bytes (`speed=` and "
        "`--bandwidth N --bytes`), the stream copies the base's 128 MiB into the overlay and the active commit the "
        "overlay's 64 MiB into the base, then pivots. qblocknb: `qb.connect_libvirt` (libvirt's own API, not timed) "
        'then `vm.block_stream(device="vda", speed=...)` + `job.wait()`, or `vm.block_commit(device="vda", '
        "speed=...)` + `wait_ready()` + `complete()` + `wait()`; virsh: `virsh blockpull DOM vda --bandwidth N "
        "--bytes --wait`, or `virsh blockcommit DOM vda --active --wait --pivot --bandwidth N --bytes`, timed as a "
        f"process (its start and connection included: {figures['virsh startup ms']:.0f} ms median for a "
        f"`virsh domstate`). {figures['rounds']} rounds, which tool goes first alternating by round. After each job "
        "the domain must be on the right image (the overlay after the stream, the base after the pivot), which "
        "after `virsh destroy` has no backing file and equals a reference holding both layers "
        "(`qemu-img compare`), or the bench stops. *command returned* is when `vm.block_*` returned (its chain "
        "reads and checks, and libvirt's call); *libvirt's READY* and *end* are when our own `BLOCK_JOB_2` "
        "callback saw them.\n\n"
        + markdown(rows)
        + "\n\n"
        + f"**qblocknb ≤ {TARGET}× virsh:** {', '.join(verdicts)}. "
        + where_time_goes(rows)
        + "\n\n"
        f"The delay: {DELAY_SPEED // MiB} MiB/s mirrors of a disk holding 1 MiB to a new image, to READY then a "
        "pivot, one after another on one domain, each with a `JobMonitor(job, plot=False)` built before its "
        "command (`vm.expect_job`, then `vm.send`). Our own callback for `BLOCK_JOB_2`, registered with "
        "`conn.domainEventRegisterAny` on a second connection opened after `start_event_loop()`, stamps "
        "`time.perf_counter()` as libvirt's event thread delivers READY and COMPLETED; an observer on the "
        "monitor's `status` trait stamps when it first shows `ready` and the outcome `completed`. Between the "
        "two: qblocknb's own callback (on its own connection, so either may be delivered first: a negative delay "
        "means qblocknb's came first), the events retold in QEMU's words, the hop to qblocknb's loop thread, the "
        "Job and the widget.\n\n" + markdown(delays) + "\n"
    )


def where_time_goes(rows: list[dict]) -> str:
    """What the columns say about the gap, from this run's medians."""
    by = {(r["job"], r["tool"]): r for r in rows}
    after, pivot = "libvirt's end to return, median ms", "READY to libvirt's end, median ms"
    parts = []
    for job in ("stream, whole chain", "active commit, pivot"):
        ours, theirs = by[(job, "qblocknb")], by[(job, "virsh")]
        gap = (float(ours["median s"]) - float(theirs["median s"])) * 1000
        text = (
            f"{job}: qblocknb {gap:+.0f} ms against virsh; its command returned after "
            f"{ours['command returned, median ms']} ms"
        )
        if ours[pivot]:
            text += f", libvirt's READY to its end took {ours[pivot]} ms with qblocknb, {theirs[pivot]} ms with virsh"
        text += f"; each returned {ours[after]} ms (qblocknb) and {theirs[after]} ms (virsh) after libvirt's end"
        parts.append(text)
    return (
        "; ".join(parts) + ". virsh's `--wait` looks at the job every 500 ms, so it pivots up to 500 ms after READY, "
        "and its process start and exit are in its time; qblocknb's waits wake on the event (their 0.2 s poll "
        "only bounds the sleep between checks for a job that gets no event)."
    )


def main() -> None:
    import run as report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--jobs", type=int, default=DELAY_JOBS)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-libvirt-") as folder:
        rows, delays, figures = bench_libvirt(Path(folder), options.rounds, options.jobs)
    command = f".venv/bin/python bench/libvirtnative.py --rounds {options.rounds} --jobs {options.jobs}"
    print(section(command, rows, delays, figures, report.markdown, report.source_version()))


if __name__ == "__main__":
    main()
