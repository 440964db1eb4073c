"""What the toolkit keeps private, what it never hands to a shell, and where it listens.

- the lab folder and every socket the toolkit makes are the user's alone (0700, or in a 0700 folder);
- no subprocess goes through a shell (a scan of the package's syntax trees);
- HMP lines quote the names they carry, checked against a real QEMU with a name built to break out;
- NBD and the migration stream listen on loopback unless told otherwise (``ss`` and the history say so);
- ``qb.connect`` trusts a socket only after QEMU's QMP greeting (the impostor rows of test_bad_input.py).
"""

from __future__ import annotations

import ast
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from foreign import ForeignQemu, drive_if_none

import qblocknb as qb
from qblocknb.model import hmp
from qblocknb.teaching.seedchain import expected_view

PACKAGE = Path(qb.__file__).parent


def private(path: Path) -> bool:
    """True when only the owner may reach ``path``: it is ours and 0700 (or, for a socket, its folder is)."""
    info = path.stat()
    if stat.S_ISSOCK(info.st_mode):
        return private(path.parent)
    return info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) == 0o700


def test_a_lab_and_its_sockets_are_private(tmp_path):
    made = qb.Lab()
    given = qb.Lab(tmp_path / "given" / "lab")
    deep = qb.Lab(tmp_path / ("d" * 120))  # too long a path for AF_UNIX: its sockets go to a folder of their own
    try:
        for lab in (made, given, deep):
            assert private(lab.path), f"{lab.path} is {oct(lab.path.stat().st_mode)}"
            lab.create("a.qcow2", size="16M")
            vm = lab.launch("a.qcow2")
            socket = vm.session.socket_path
            assert stat.S_ISSOCK(socket.stat().st_mode) and private(socket), f"{socket} is reachable by others"
        assert given.machines[0].session.socket_path.parent == given.path
        assert deep.machines[0].session.socket_path.parent != deep.path
    finally:
        for lab in (made, given, deep):
            lab.close()


def test_the_nbd_view_of_a_foreign_qemu_is_private(lab):
    """A QEMU the toolkit did not start is read through an NBD export on a unix socket in a private folder."""
    lab.create("a.qcow2", size="16M")
    lab.write("a.qcow2", 0, "1M", pattern=0x11)
    qemu = ForeignQemu(lab.path, drive_if_none(lab.file("a.qcow2")))
    try:
        vm = qb.connect(qemu.socket)
        with vm.guest_io._export(vm.disk(None)) as uri:
            view = Path(re.search(r"socket=(.*)$", uri).group(1))
            assert stat.S_ISSOCK(view.stat().st_mode) and private(view), uri
        assert not view.parent.exists(), "the folder goes with the export"
        assert vm.verify([(0, "1M", 0x11)])
        vm.session.close()
    finally:
        qemu.end()


def test_tls_credentials_are_private(tmp_path):
    folder = qb.tls.make_credentials(tmp_path / "tls")
    assert private(folder)
    assert {"ca-cert.pem", "server-key.pem", "client-key.pem"} <= {p.name for p in folder.iterdir()}


SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput")}


def shell_uses(tree: ast.AST) -> list[str]:
    """Calls that would give a command line to a shell."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = (getattr(function.value, "id", ""), function.attr) if isinstance(function, ast.Attribute) else ("", "")
        if name in SHELL_CALLS or name[1] == "create_subprocess_shell":
            found.append(f"line {node.lineno}: {'.'.join(name)}")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and not keyword.value.value):
                found.append(f"line {node.lineno}: shell={ast.unparse(keyword.value)}")
    return found


def test_no_subprocess_goes_through_a_shell():
    sample = ast.parse("import os, subprocess\nos.system('x')\nsubprocess.run('x', shell=True)\nos.popen('x')")
    assert len(shell_uses(sample)) == 3, "the scan finds what it looks for"
    wrong = {
        str(path.relative_to(PACKAGE)): uses
        for path in sorted(PACKAGE.rglob("*.py"))
        if (uses := shell_uses(ast.parse(path.read_text())))
    }
    assert not wrong, wrong


def test_hmp_lines_keep_a_hostile_name_one_word(seed_vm):
    """Unquoted, this device name would end early and run a write of 0xEE; quoted, QEMU only fails to find it."""
    hostile = 'virtio0" "write -P 0xee 0 4M'
    line = hmp.qemu_io(hostile, "read -P 0xa1 0 64k")
    assert line.count('"') == 6 and line.startswith('qemu-io "virtio0\\" ')
    sent = len(seed_vm.history)
    reply = seed_vm.hmp(line)
    assert "not found" in reply.lower() or "cannot find" in reply.lower(), reply
    assert len(seed_vm.history) == sent + 1
    assert seed_vm.verify(expected_view("ABCD")), "no write happened"
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def listening(pid: int) -> list[str]:
    """The local addresses a process listens on (TCP), from ``ss``."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines() if f"pid={pid}," in line]


def test_nbd_and_migration_listen_on_loopback_by_default(lab):
    lab.create("a.qcow2", size="16M")
    source = lab.launch("a.qcow2")
    destination = qb.launch_destination(lab, source)
    migration = qb.StorageMigration(source, destination)
    migration.start_server()
    try:
        (start,) = destination.history.query("command == 'nbd-server-start'").arguments
        assert start["addr"]["data"]["host"] == "127.0.0.1"
        addresses = listening(destination.pid)
        assert f"127.0.0.1:{migration.nbd_port}" in addresses, addresses
        assert len(addresses) == 2, f"the NBD server and -incoming, nothing more: {addresses}"
        assert all(address.startswith("127.0.0.1:") for address in addresses), addresses
        assert migration.incoming.startswith("tcp:127.0.0.1:")
    finally:
        migration.stop_server()
    assert listening(destination.pid) == [a for a in addresses if a != f"127.0.0.1:{migration.nbd_port}"]


@pytest.mark.parametrize("name", ["plain", "with space é", "x\"; touch pwned; '", "a,server=off,b"])
def test_a_lab_folder_of_any_name_works(tmp_path, name):
    """The lab's own path reaches QEMU too (the image and the QMP socket): its name is data as well."""
    with qb.Lab(Path(tempfile.mkdtemp(dir=tmp_path)) / name) as lab:
        lab.create("a.qcow2", size="16M")
        lab.write("a.qcow2", 0, "64k", pattern=0x5A)
        vm = lab.launch("a.qcow2")
        vm.write("virtio0", "64k", "64k", pattern=0x5B)
        assert vm.verify([(0, "64k", 0x5A), ("64k", "64k", 0x5B)])
        assert str(vm.chain()) == "[a.qcow2]"
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()
