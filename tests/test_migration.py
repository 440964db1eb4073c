"""Live storage migration over NBD between two QEMUs, across two network namespaces when we are root.

The two "hosts" are network namespaces joined by a veth pair (10.199.0.1 and
10.199.0.2), made and removed by this module; without root the test falls
back to loopback and says so in a warning.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.migration.flow import PLAN, StorageMigration, launch_destination, migrate_storage
from qblocknb.migration.tls import make_credentials
from qblocknb.teaching.seedchain import LAYERS, expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
DESTINATION = "[contents-of-a-b-c.qcow2] <-- [target-disk.qcow2]"
SEED_COMMANDS = [
    "nbd-server-start",
    "nbd-server-add",
    "drive-mirror",
    "BLOCK_JOB_READY",
    "migrate",
    "query-migrate",
    "block-job-cancel",
    "nbd-server-stop",
    "cont",
]


@dataclass(frozen=True)
class Hosts:
    """Where each QEMU runs and which address the destination listens on."""

    source_wrapper: tuple[str, ...]
    destination_wrapper: tuple[str, ...]
    destination_address: str
    crossing: bool


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


@contextlib.contextmanager
def veth_hosts() -> Iterator[Hosts]:
    """Two namespaces joined by a veth pair; both are deleted afterwards (the veth goes with them)."""
    tag = f"qbn{os.getpid()}"
    source_ns, destination_ns = f"{tag}s", f"{tag}d"
    made: list[str] = []
    try:
        for ns in (source_ns, destination_ns):
            ip("netns", "add", ns)
            made.append(ns)
        ip("link", "add", f"{tag}a", "type", "veth", "peer", "name", f"{tag}b")
        for ns, dev, address in ((source_ns, f"{tag}a", "10.199.0.1/24"), (destination_ns, f"{tag}b", "10.199.0.2/24")):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", address, "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield Hosts(("ip", "netns", "exec", source_ns), ("ip", "netns", "exec", destination_ns), "10.199.0.2", True)
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", f"{tag}a"], check=False, capture_output=True, timeout=10)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    loopback = Hosts((), (), "127.0.0.1", False)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        warnings.warn("not root: the migration test runs over loopback, not across a veth pair", stacklevel=1)
        yield loopback
        return
    try:
        with veth_hosts() as made:
            yield made
            return
    except subprocess.CalledProcessError as error:  # only setup can raise: teardown does not check
        warnings.warn(f"ip netns failed ({error.stderr.strip()}): the migration test runs over loopback", stacklevel=1)
    yield loopback


def seed_source(lab: qb.Lab, wrapper: tuple[str, ...] = ()) -> qb.Machine:
    """The seed's ``[A] <-- [B] <-- [C] <-- [D]``, live, in the given namespace."""
    base = LAYERS[0]
    lab.create(base.file, size="64M")
    lab.write(base.file, base.offset, base.length, pattern=base.pattern)
    vm = lab.launch(base.file, node_name=base.node_name, name="source", wrapper=wrapper)
    for below, layer in itertools.pairwise(LAYERS):
        vm.blockdev_snapshot_sync(
            node_name=below.node_name, snapshot_file=layer.file, snapshot_node_name=layer.node_name, format="qcow2"
        )
        vm.write("virtio0", layer.offset, layer.length, pattern=layer.pattern)
    return vm


def net_namespace(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def test_migration_moves_disk_and_guest_including_writes_during_the_mirror(lab, hosts):
    source = seed_source(lab, hosts.source_wrapper)
    destination = launch_destination(lab, source, host=hosts.destination_address, wrapper=hosts.destination_wrapper)
    if hosts.crossing:
        spaces = {net_namespace(source.pid), net_namespace(destination.pid), net_namespace(os.getpid())}
        assert len(spaces) == 3, "source, destination and the test each live in their own network namespace"
    seen = []
    migration = StorageMigration(
        source, destination, host=hosts.destination_address, speed="1M", on_step=lambda m, row: seen.append(row)
    )
    migration.start_server()
    migration.export_target()
    job = migration.mirror()
    source.write("virtio0", "8M", "1M", pattern=0x5E)  # the guest keeps writing while the mirror copies
    status_at_write = job.status
    target = source.chain().targets[0]  # the nbd: target, matched to the node QEMU opened for it
    assert (target.format, target.virtual_size) == ("raw", 64 << 20) and target.name.endswith("/node-TargetDisk")
    migration.wait_ready()
    source.write("virtio0", "12M", "512k", pattern=0x6F)  # and after READY, until the switch
    migration.run()

    assert status_at_write in ("created", "running"), "the first write landed before the mirror was READY"
    assert list(migration.steps["command"]) == SEED_COMMANDS
    assert list(migration.steps["step"]) == list(range(1, 10))
    assert set(migration.steps["outcome"]) == {"ok"}
    assert [row["outcome"] for row in seen] == ["running", "ok"] * len(SEED_COMMANDS)
    assert job.outcome == "completed" and job.ready
    assert set(migration.timeline["activity"]) == {"mirror", "migration"}
    assert migration.progress["status"].iloc[-1] == "completed"
    if hosts.crossing:
        assert migration.target == "nbd:10.199.0.2:10809:exportname=node-TargetDisk"
        assert migration.incoming.startswith("tcp:10.199.0.2:")

    assert source.query_status()["status"] == "postmigrate"
    assert destination.query_status()["status"] == "running"
    assert str(source.chain()) == SEED
    assert str(destination.chain()) == DESTINATION
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2"), "the destination reads what the source read at the switch"
    written = [(8 << 20, 1 << 20, 0x5E), (12 << 20, 512 << 10, 0x6F)]
    assert destination.verify(expected_view("ABCD") + written)
    destination.write("virtio0", "20M", "64k", pattern=0x7A)  # the guest lives on at the destination
    assert destination.read_matches("virtio0", "20M", "64k", 0x7A)


def test_destination_not_listening_is_explained(lab):
    source = seed_source(lab)
    destination = launch_destination(lab, source)
    migration = StorageMigration(source, destination)
    with pytest.raises(qb.Error) as caught:
        migration.mirror()  # step 1 (nbd-server-start) skipped: nobody listens
    text = str(caught.value)
    assert text.startswith("live storage migration stopped at step 3 (drive-mirror on the source)")
    assert f"the destination is not listening for NBD at {migration.address}" in text
    assert "Connection refused" in text and "start the destination's NBD server first" in text
    assert "the destination is waiting for an incoming migration" in text
    assert "the source still holds the only complete disk" in text
    assert list(migration.steps["outcome"].str.startswith("failed")) == [True]
    assert str(source.chain()) == SEED and source.verify(expected_view("ABCD"))


def test_read_only_export_is_explained_then_a_retry_succeeds(lab):
    source = seed_source(lab)
    destination = launch_destination(lab, source)
    with pytest.raises(qb.Error) as caught:
        migrate_storage(source, destination, writable=False)  # what the seed's JSON does
    error = caught.value
    text = str(error)
    assert "step 3 (drive-mirror on the source)" in text
    assert "the destination exports 'node-TargetDisk' read-only" in text and "writable=true" in text
    assert "exports node-TargetDisk, NBD server running" in text
    migration = error.migration
    assert migration.abort() == ["nbd-server-stop on the destination"] and migration.done == []

    migration.writable = True
    migration.run()  # the retry starts again from the NBD server
    assert list(migration.steps["command"]) == SEED_COMMANDS[:3] + SEED_COMMANDS
    assert list(migration.steps["outcome"])[2].startswith("failed") and migration.done == [m for m, *_ in PLAN]
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2")
    assert str(destination.chain()) == DESTINATION and destination.verify(expected_view("ABCD"))


def test_migrate_before_ready_is_refused(lab):
    source = seed_source(lab)
    destination = launch_destination(lab, source)
    migration = StorageMigration(source, destination, speed="64k")
    migration.start_server()
    migration.export_target()
    migration.mirror().pause()
    with pytest.raises(qb.Error) as caught:
        migration.migrate()
    text = str(caught.value)
    assert "step 5 (migrate on the source)" in text and "the mirror job is not READY" in text
    assert "mirror job job0 is " in text and "not READY" in text
    assert destination.query_status()["status"] == "inmigrate", "nothing was sent"
    assert migration.abort() == ["block-job-cancel force=true of job0", "nbd-server-stop on the destination"]
    assert str(source.chain()) == SEED and source.verify(expected_view("ABCD"))


def test_tls_refuses_plain_clients_and_carries_the_migration(lab, tmp_path: Path):
    credentials = make_credentials(tmp_path / "pki", hosts=["127.0.0.1"])
    source = seed_source(lab)
    destination = launch_destination(lab, source)
    migration = StorageMigration(source, destination, tls=credentials)
    migration.load_tls()
    migration.start_server()
    migration.export_target()
    plain = subprocess.run(
        ["qemu-img", "info", f"nbd:127.0.0.1:{migration.nbd_port}:exportname=node-TargetDisk"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert plain.returncode != 0 and "TLS" in plain.stderr, "a client without credentials is turned away"
    assert migration.target.startswith("json:") and '"tls-creds": "tls0"' in migration.target
    migration.run()
    assert set(migration.steps["outcome"]) == {"ok"}
    assert list(migration.steps["command"]) == ["object-add", *SEED_COMMANDS]
    assert list(migration.steps["step"]) == list(range(10)), "loading the credentials is step 0"
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2")
    assert destination.verify(expected_view("ABCD"))


def test_view_draws_both_chains_and_every_step(lab):
    from qblocknb.widgets.migrationview import MigrationView

    source = seed_source(lab)
    destination = launch_destination(lab, source)
    migration = StorageMigration(source, destination)
    view = MigrationView(migration)
    try:
        assert view.steps.value.count("·") == len(SEED_COMMANDS), "every step is still to come"
        migration.run()
        assert view.steps.value.count("✓") == len(SEED_COMMANDS)
        assert all(f"<code>{command}</code>" in view.steps.value for command in SEED_COMMANDS)
        assert view.mirror.children[0].job is migration.job
        assert str(view.source.refresh()) == SEED and str(view.destination.refresh()) == DESTINATION
        assert "<svg" in view.source.svg and "target&#45;disk.qcow2" in view.destination.svg
    finally:
        view.close()
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2")
