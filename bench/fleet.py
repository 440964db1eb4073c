"""``fleet.disks`` over 100 domains on two libvirt hosts, against a ``virsh list`` + ``virsh dumpxml`` loop.

50 persistent domains per host (qemu:///system, and the second host over ssh that
``tools/libvirt-second-host.sh`` sets up), each on a chain of 1 to 4 empty qcow2 images made with qemu-img;
5 per host are started (paused, 64 MiB, no guest: a started domain costs a QEMU process and its memory), the
other 45 stay shut off, so both the live XML and the inactive one are read.  The images are volumes of a
storage pool on each host (the second host's own pool, and a transient one over the bench folder on the
first), so that ``fleet.disks`` finds a shut-off domain's backing chain too.

Each round times, side by side: a ``qb.Fleet`` made and read (connections opened), a second read of the
same Fleet (connections kept, as a notebook keeps them), and for each host ``virsh -c URI list --all
--name`` then ``virsh -c URI dumpxml NAME`` for each of its domains (one process, and over ssh one
connection, per call), the hosts one after the other, as a shell loop does them.  virsh's loop gets less:
no sizes, no block jobs, no checkpoints, and a shut-off domain's XML names only its active image.  Every
``fleet.disks`` is checked (100 rows, each chain as deep as built) before it counts::

    .venv/bin/python bench/fleet.py                   # 3 rounds
    .venv/bin/python bench/run.py --only fleet        # the same, written into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stats import median

import qblocknb as qb
from qblocknb.live import images
from qblocknb.live.libvirtguest import domain_xml
from qblocknb.qmp.libvirt import start_event_loop

TITLE = "Fleet: 100 domains over two libvirt hosts"
HOST2 = Path("/var/lib/qblocknb/host2")
PER_HOST, RUNNING, ROUNDS = 50, 5, 3


def virsh_loop(uri: str) -> int:
    """``virsh list --all --name``, then ``virsh dumpxml`` of each domain; the number of domains read."""
    listed = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True, check=True)
    names = [name for name in listed.stdout.split() if name]
    for name in names:
        subprocess.run(["virsh", "-c", uri, "dumpxml", name], capture_output=True, text=True, check=True)
    return len(names)


class Domains:
    """The bench's domains on one host, their images in ``folder`` (a pool's), removed by ``close``."""

    def __init__(self, libvirt: Any, uri: str, folder: Path, tag: str) -> None:
        self.libvirt, self.conn, self.folder, self.tag = libvirt, libvirt.open(uri), folder, tag
        self.depths: dict[str, int] = {}

    def make(self, count: int, running: int) -> None:
        for number in range(count):
            name, depth, below = f"{self.tag}-{number:02d}", 1 + number % 4, None
            for layer in range(depth):
                below = images.create(self.folder / f"{name}-{layer}.qcow2", "64M", below, backing_fmt="qcow2")
            dom = self.conn.defineXML(domain_xml(name, below, memory_mib=64))
            self.depths[name] = depth
            if number < running:
                dom.createWithFlags(self.libvirt.VIR_DOMAIN_START_PAUSED)

    def close(self) -> None:
        for name in self.depths:
            with contextlib.suppress(self.libvirt.libvirtError):
                dom = self.conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        for path in self.folder.glob(f"{self.tag}-*"):
            path.unlink()
        self.conn.close()


def checked(fleet: qb.Fleet, depths: dict[str, int]) -> None:
    """``fleet.disks`` has every bench domain, each chain as deep as built; raises otherwise."""
    frame = fleet.disks
    ours = frame[frame.domain.isin(list(depths))]
    wrong = [row.domain for row in ours.itertuples() if row.depth != depths[row.domain]]
    if len(ours) != len(depths) or wrong or frame.error.ne("").any():
        raise AssertionError(f"fleet.disks read {len(ours)} of {len(depths)} domains; wrong depths: {wrong[:5]}")


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_fleet(folder: Path, rounds: int = ROUNDS) -> tuple[list[dict], dict]:
    start_event_loop()
    libvirt = __import__("libvirt")
    uris = {"host1": "qemu:///system", "host2": (HOST2 / "uri").read_text().strip()}
    tag = f"qbbench-{uuid.uuid4().hex[:6]}"
    pool_xml = f"<pool type='dir'><name>{tag}</name><target><path>{folder}</path></target></pool>"
    hosts: list[Domains] = []
    pool = libvirt.open(uris["host1"]).storagePoolCreateXML(pool_xml, 0)  # transient: gone when destroyed
    try:
        for label, place in (("host1", folder), ("host2", HOST2 / "images")):
            hosts.append(Domains(libvirt, uris[label], place, f"{tag}-{label}"))
            hosts[-1].make(PER_HOST, RUNNING)
        pool.refresh()
        hosts[1].conn.storagePoolLookupByName("qblocknb-host2").refresh()
        depths = {name: depth for host in hosts for name, depth in host.depths.items()}
        samples: dict[str, list[float]] = {"cold": [], "warm": [], "virsh": [], "host1": [], "host2": []}
        for _ in range(rounds):
            fleet = qb.Fleet(uris)
            samples["cold"].append(timed(lambda f=fleet: checked(f, depths)))
            started = time.perf_counter()
            reads = fleet.read()
            samples["warm"].append(time.perf_counter() - started)
            for read in reads:
                samples[read.host].append(read.seconds)
            fleet.close()
            samples["virsh"].append(timed(lambda: [virsh_loop(uri) for uri in uris.values()]))
    finally:
        for host in hosts:
            host.close()
        pool.destroy()
    domains = len(depths)
    figures = {name: median(values) for name, values in samples.items()}
    figures["domains"] = domains
    rows = [
        {"what": "qb.Fleet(uris).disks (connect, then read both hosts at once)", "median s": f"{figures['cold']:.3f}"},
        {"what": "fleet.read() again (connections kept)", "median s": f"{figures['warm']:.3f}"},
        {"what": "  of which host1 (qemu:///system)", "median s": f"{figures['host1']:.3f}"},
        {"what": "  of which host2 (qemu+ssh)", "median s": f"{figures['host2']:.3f}"},
        {"what": "virsh list + dumpxml of each domain, host after host", "median s": f"{figures['virsh']:.3f}"},
    ]
    return rows, figures


def section(command: str, rows: list[dict], figures: dict, markdown: Callable, source: str) -> str:
    day = datetime.date.today().isoformat()
    return (
        f"## {TITLE}\n\nMade by `{command}` on {day} (qblocknb at {source}). {figures['domains']} persistent domains, "
        f"{PER_HOST} per host, {RUNNING} of them started (paused) per host and the rest shut off, on chains of "
        f"1 to 4 images that are storage-pool volumes; {ROUNDS} rounds, medians. `fleet.disks` makes one "
        "`getAllDomainStats` call per host and, per domain, `XMLDesc`, `listAllCheckpoints` and (running ones) "
        "`blockJobInfo`, plus a pool lookup per layer below a shut-off domain's active image; both hosts at once. "
        "virsh's loop starts a process (and over ssh a connection) per call and gets less (no sizes, jobs or "
        "checkpoints, and only the active image of a shut-off domain).\n\n"
        f"{markdown(rows)}\n\nA warm `fleet.read()` is {figures['virsh'] / figures['warm']:.0f}x faster than the virsh "
        f"loop, and a cold `qb.Fleet(uris).disks` {figures['virsh'] / figures['cold']:.0f}x.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="qblocknb-bench-fleet-") as folder:
        rows, _ = bench_fleet(Path(folder), rounds)
    for row in rows:
        print(f"{row['median s']:>8}  {row['what']}")


if __name__ == "__main__":
    main()
