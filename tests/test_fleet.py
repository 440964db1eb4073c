"""qb.Fleet over two real libvirt daemons: qemu:///system and the second host reached over ssh.

Domains are persistent, on chains of different depths built offline (layer N writes pattern 0x10+N over its
own MiBs), on both hosts; the second host's images live in its storage pool folder, which its QEMU and
libvirt's pool both see.  Every test destroys and undefines its domains on both hosts and deletes its images.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import libvirt_env
import pytest
import second_host
from libvirt_env import URI, libvirt, read_back, remove

import qblocknb as qb
from qblocknb.live import images
from qblocknb.live.libvirtguest import domain_xml

conn = libvirt_env.conn  # the fixture (it starts qblocknb's libvirt event loop before any connection)
MIB = 1 << 20
HOST2_PIDS = second_host.HOME / "pids"


def dumpxml_files(address: str, name: str) -> list[str]:
    """The files of vda's chain, top first, as ``virsh -c ADDRESS dumpxml`` names them."""
    done = subprocess.run(["virsh", "-c", address, "dumpxml", name], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    element = ET.fromstring(done.stdout).find("devices/disk/target[@dev='vda']/..")
    files = []
    while element is not None and (source := element.find("source")) is not None:
        files.append(source.get("file"))
        element = element.find("backingStore")
    return files


@dataclass
class Made:
    """One test domain: where it is, its chain (top last) and what each layer wrote."""

    host: str
    address: str
    name: str
    files: list[Path]
    runs: list[tuple[int, int, int]]


@dataclass
class Hosts:
    """Both daemons, the domains made on them, and their images; ``clean`` removes all of it."""

    folder: Path
    address2: str
    conns: dict[str, libvirt.virConnect] = field(default_factory=dict)
    made: list[Made] = field(default_factory=list)
    tag: str = field(default_factory=lambda: f"qbfleet-{uuid.uuid4().hex[:6]}")

    def conn(self, host: str) -> libvirt.virConnect:
        current = self.conns.get(host)
        if current is None or not current.isAlive():
            current = self.conns[host] = libvirt.open(URI if host == "host1" else self.address2)
        return current

    def domain(self, host: str, depth: int, mib: int = 1, start: bool = True) -> Made:
        """A domain on a chain of ``depth`` images, each writing ``mib`` MiB of its own pattern."""
        name = f"{self.tag}-{host}-{len(self.made)}"
        folder = self.folder if host == "host1" else second_host.IMAGES
        files, runs, below = [], [], None
        for number in range(depth):
            path = images.create(folder / f"{name}-{chr(97 + number)}.qcow2", "64M", below, backing_fmt="qcow2")
            images.write(path, number * mib * MIB, mib * MIB, 0x10 + number)
            files.append(path)
            runs.append((number * mib * MIB, mib * MIB, 0x10 + number))
            below = path
        if host == "host2":
            self.conn(host).storagePoolLookupByName(second_host.POOL).refresh()
        dom = self.conn(host).defineXML(domain_xml(name, files[-1]))
        made = Made(host, URI if host == "host1" else self.address2, name, files, runs)
        self.made.append(made)
        if start:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
        return made

    def clean(self) -> None:
        for made in self.made:
            with contextlib.suppress(libvirt.libvirtError):
                remove(self.conn(made.host), made.name)
        for path in second_host.IMAGES.glob(f"{self.tag}-*"):
            path.unlink()
        with contextlib.suppress(libvirt.libvirtError):
            self.conn("host2").storagePoolLookupByName(second_host.POOL).refresh()


@pytest.fixture
def hosts(conn, tmp_path) -> Iterator[Hosts]:
    address = second_host.uri()
    try:
        made = Hosts(tmp_path, address)
        made.conn("host2")
    except libvirt.libvirtError as exc:
        libvirt_env.unavailable(f"the second libvirt host does not answer at {address} ({exc.get_error_message()})")
    try:
        yield made
    finally:
        made.clean()


@pytest.fixture
def fleet(hosts) -> Iterator[qb.Fleet]:
    with qb.Fleet({"host1": URI, "host2": hosts.address2}) as opened:
        yield opened


def mine(hosts: Hosts):
    return lambda row: row["domain"].startswith(hosts.tag)


def test_disks_match_virsh_dumpxml_on_each_host(hosts, fleet):
    deep = hosts.domain("host1", 4)
    flat = hosts.domain("host1", 1)
    deeper = hosts.domain("host2", 5)
    off = hosts.domain("host2", 3, start=False)
    frame = fleet.disks
    rows = {row.domain: row for row in frame[frame.domain.str.startswith(hosts.tag, na=False)].itertuples()}
    assert set(rows) == {deep.name, flat.name, deeper.name, off.name}
    for made in (deep, flat, deeper):
        row = rows[made.name]
        files = dumpxml_files(made.address, made.name)
        assert files == [str(path) for path in reversed(made.files)], "the chains were built as intended"
        assert (row.host, row.state, row.disk, row.source) == (made.host, "paused", "vda", "live XML")
        assert row.chain == " <-- ".join(f"[{Path(f).name}]" for f in reversed(files))
        assert row.depth == len(files) and row.job == "" and row.error == ""
        assert row.virtual == 64 * MIB and row.allocated > 0
        assert fleet.chain(made.host, made.name).files == [str(path) for path in made.files]
    shut = rows[off.name]
    assert dumpxml_files(off.address, off.name) == [str(off.files[-1])], "the inactive XML names only the top"
    assert (shut.state, shut.depth, shut.source) == ("shut off", 3, "inactive XML + pool volumes")
    assert [info["filename"] for info in images.info_chain(off.files[-1])] == [str(p) for p in reversed(off.files)]
    jobs = fleet.jobs
    assert jobs[jobs.domain.str.startswith(hosts.tag)].empty


def test_a_fleet_plan_flattens_the_deep_disks_within_per_host_limits(hosts, fleet):
    made = [hosts.domain(host, depth, mib=2) for host, depth in (("host1", 4), ("host1", 3), ("host1", 2))]
    made += [hosts.domain(host, depth, mib=2) for host, depth in (("host2", 5), ("host2", 4), ("host2", 3))]
    plan = fleet.plan(qb.goals.max_depth(2), select=mine(hosts))
    assert plan.totals["run"] == 5 and plan.totals["at goal"] == 1 and plan.totals["invalid"] == 0
    assert "virsh blockpull" in str(plan) and "max_depth(2)" in plan._repr_html_()
    running: dict[str, set[str]] = {"host1": set(), "host2": set()}
    most = {"host1": 0, "host2": 0}
    lock = threading.Lock()

    def progress(row: dict) -> None:
        with lock:
            (running[row["host"]].add if row["outcome"] == "running" else running[row["host"]].discard)(row["domain"])
            most[row["host"]] = max(most[row["host"]], len(running[row["host"]]))

    summary = plan.run(per_host=1, bandwidth="4M", progress=progress, timeout=120)
    assert most == {"host1": 1, "host2": 1}, "one disk at a time per host"
    by_name = {row.domain: row for row in summary.itertuples()}
    for domain in made:
        row = by_name[domain.name]
        want = [domain.files[0], domain.files[-1]] if len(domain.files) > 2 else domain.files
        assert row.outcome == ("done" if len(domain.files) > 2 else "at goal"), row.detail
        assert dumpxml_files(domain.address, domain.name) == [str(path) for path in reversed(want)]
        assert fleet.chain(domain.host, domain.name).files == [str(path) for path in want]
    again = fleet.plan(qb.goals.max_depth(2), select=mine(hosts)).run(per_host=2, bandwidth="4M", timeout=60)
    assert set(again.outcome) == {"at goal"}, "a second run finds nothing left to do"
    for domain in made:
        hosts.conn(domain.host).lookupByName(domain.name).destroy()  # QEMU flushes and lets go of the files
        assert read_back(domain.files[-1], domain.runs) == [], f"{domain.name} reads every layer's data"


def test_two_per_host_run_side_by_side_and_keep_last_commits_old_overlays(hosts, fleet):
    made = [hosts.domain("host1", 4), hosts.domain("host1", 4), hosts.domain("host2", 4)]
    most, running, lock = [0], set(), threading.Lock()

    def progress(row: dict) -> None:
        with lock:
            key = (row["host"], row["domain"])
            (running.add if row["outcome"] == "running" and row["host"] == "host1" else running.discard)(key)
            most[0] = max(most[0], len(running))

    plan = fleet.plan(qb.goals.keep_last(2), select=mine(hosts))
    assert all("libvirt cannot stream into an intermediate image" in item.note for item in plan.disks)
    summary = plan.run(per_host=2, bandwidth="2M", progress=progress, timeout=120)
    assert set(summary.outcome) == {"done"}, summary.detail.tolist()
    assert most[0] == 2, "host1's two disks ran at the same time"
    for domain in made:
        want = [domain.files[0], *domain.files[-2:]]
        assert dumpxml_files(domain.address, domain.name) == [str(path) for path in reversed(want)]
        hosts.conn(domain.host).lookupByName(domain.name).destroy()
        assert read_back(domain.files[-1], domain.runs) == []


def qemu_pids(name: str) -> list[int]:
    """The QEMU processes of domain ``name`` (``-name guest=NAME,...``), found in /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if f"guest={name},".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_host_stopped_mid_run_is_an_error_row_and_the_others_finish(hosts, fleet):
    made = [hosts.domain("host1", 3, mib=4), hosts.domain("host2", 3, mib=4), hosts.domain("host2", 3, mib=4)]
    orphans = [pid for domain in made[1:] for pid in qemu_pids(domain.name)]
    assert len(orphans) == 2
    plan = fleet.plan(qb.goals.max_depth(1), select=mine(hosts))
    summary: list = []
    runner = threading.Thread(target=lambda: summary.append(plan.run(per_host=2, bandwidth="1M", timeout=120)))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while not all(plan.outcomes.get(item.key) and plan.outcomes[item.key].job for item in plan.disks):
            assert time.monotonic() < deadline, "every disk's job should have started"
            time.sleep(0.1)
        os.kill(int((HOST2_PIDS / "libvirtd.pid").read_text()), 15)  # host2's daemon stops mid-run
        runner.join(150)
        assert not runner.is_alive(), "the run ends although a host went away"
        rows = {row.domain: row for row in summary[0].itertuples()}
        assert rows[made[0].name].outcome == "done", rows[made[0].name].detail
        assert dumpxml_files(URI, made[0].name) == [str(made[0].files[-1])]
        for domain in made[1:]:
            assert rows[domain.name].outcome == "failed" and rows[domain.name].detail, rows[domain.name]
        frame = fleet.disks
        down = frame[frame.host == "host2"]
        assert len(down) == 1 and down.error.iloc[0].startswith(hosts.address2), down.error.iloc[0]
        assert not frame[(frame.host == "host1") & frame.domain.str.startswith(hosts.tag, na=False)].empty
    finally:
        runner.join(150)
        for pid in orphans:  # the daemon that ran them is gone; a restarted one does not know them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        subprocess.run([str(Path(__file__).parent.parent / "tools/libvirt-second-host.sh")], check=True, timeout=120)
    assert fleet.disks.query("host == 'host2'").error.eq("").all(), "host2 answers again after its restart"


def test_fleet_view_sorts_filters_opens_a_disk_and_follows_a_job(hosts, fleet):
    pytest.importorskip("ipywidgets")
    deep = hosts.domain("host1", 4, mib=4)
    hosts.domain("host1", 2)
    far = hosts.domain("host2", 3)
    view = qb.widgets.FleetView(fleet, interval=0.1)
    try:
        view.filter.value = hosts.tag
        wait_for(lambda: len(view.table.children) == 3, "the three disks show")
        view.sort.value, view.descending.value = "depth", True
        assert [row.row["depth"] for row in view.table.children] == [4, 3, 2]
        view.filter.value = f"{hosts.tag}-host2"
        assert [row.key[1] for row in view.table.children] == [far.name]
        view.filter.value = hosts.tag
        view.row_widgets[("host1", deep.name, "vda")].button.click()
        drawn = view.diagram.value.replace("&#45;", "-")  # graphviz writes - as &#45;
        assert "<svg" in drawn and all(path.name in drawn for path in deep.files)
        assert view.dashboard is not None and str(view.dashboard.vm.chain()).startswith(f"[{deep.files[0].name}]")
        plan = fleet.plan(qb.goals.max_depth(2), select=lambda row: row["domain"] == deep.name)
        runner = threading.Thread(target=lambda: plan.run(bandwidth="2M", timeout=60))
        runner.start()
        bar = view.row_widgets[("host1", deep.name, "vda")].bar
        wait_for(lambda: bar.layout.visibility == "visible" and 0 < bar.value < 1, "the bar shows the job")
        seen = bar.value
        wait_for(lambda: bar.value > seen, "the bar moves")
        runner.join(60)
        wait_for(lambda: bar.bar_style == "success" and bar.value == 1.0, "the bar shows completion")
        wait_for(lambda: view.rows[("host1", deep.name, "vda")]["depth"] == 2, "the row shows the new chain")
    finally:
        view.close()


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s"
        time.sleep(0.05)


def test_plan_refusals_are_sentences(hosts, fleet):
    with pytest.raises(qb.InputError, match="keeps no image"):
        qb.goals.max_depth(0)
    with pytest.raises(qb.InputError, match="no host 'nowhere'"):
        fleet.chain("nowhere", "x")
