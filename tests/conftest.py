"""Shared fixtures: a fresh lab per test, the seed's chain in a real QEMU, and a leak check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.teaching.seedchain import build_seed_chain, expected_view


def qemu_pids_under(folder: Path) -> list[int]:
    """PIDs of QEMU processes (and storage daemons) whose command line mentions ``folder``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        qemu = "qemu-system" in cmdline or "qemu-storage-daemon" in cmdline
        if qemu and str(folder) in cmdline and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use libvirtd are marked ``libvirt``: its QEMU is the system's, whatever PATH says, so the
    other QEMU versions' runs (make test-qemu-VERSION) leave them out."""
    for item in items:
        if "conn" in item.fixturenames:
            item.add_marker(pytest.mark.libvirt)


@pytest.fixture(scope="session", autouse=True)
def no_qemu_left_behind(tmp_path_factory: pytest.TempPathFactory):
    """After the whole suite, no QEMU started under the test folders may still run."""
    root = tmp_path_factory.getbasetemp()
    yield
    leftover = qemu_pids_under(root)
    assert not leftover, f"QEMU processes left running after the suite: {leftover}"


@pytest.fixture
def lab(tmp_path: Path):
    with qb.Lab(tmp_path / "lab") as the_lab:
        yield the_lab


@pytest.fixture
def seed_vm(lab: qb.Lab) -> qb.Machine:
    """``[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]`` live, each layer with its own pattern."""
    vm = build_seed_chain(lab)
    assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert vm.verify(expected_view("ABCD"))
    return vm


def disk_chain(lab: qb.Lab, image: str) -> str:
    """The chain as ``qemu-img info --backing-chain`` sees it on disk, in the seed's notation."""
    return str(lab.chain(image))
