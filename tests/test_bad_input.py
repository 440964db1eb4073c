"""Bad input, the whole catalogue in one table: a one-line sentence every time, nothing sent, nothing changed.

One seed chain serves every row (building it per row would cost a QEMU each): a row may not change it, and
that is exactly what each row checks.  A backup ``busy`` (sync=none, paused, so nothing moves) stays the whole
time, for the rows about job ids in use and job verbs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import qblocknb as qb
from qblocknb.model.qmpshell import format_line
from qblocknb.teaching.seedchain import build_seed_chain, expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
NODES = "node-A, node-B, node-C, node-D"


READ_ONLY: dict[str, str] = {}  # why the read-only folder is not read-only for us, if it is not


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """A folder this user cannot create files in: mode 0500, and immutable too when we are root."""
    path.mkdir()
    path.chmod(0o500)
    immutable = os.geteuid() == 0
    if immutable:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
        immutable = done.returncode == 0
        if not immutable:
            READ_ONLY["why"] = f"root cannot be kept out of a folder here (chattr +i: {done.stderr.strip()})"
    try:
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(0o700)


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[qb.Machine]:
    """The seed chain, a spare node ``node-T``, an existing ``exists.qcow2``, a read-only folder, a paused job.

    The job copies between two nodes outside the chain, so that every row's good call (``JOB_CALLS``) would be
    accepted by QEMU: only the row's one bad change is refused.
    """
    with qb.Lab(tmp_path_factory.mktemp("bad") / "lab") as lab:
        machine = build_seed_chain(lab)
        for name, node in (("t", "node-T"), ("spare", "node-Spare"), ("busy", "node-Busy")):
            lab.create(f"{name}.qcow2", size="64M")
            machine.blockdev_add(driver="qcow2", node_name=node, file={"driver": "file", "filename": f"{name}.qcow2"})
        lab.create("exists.qcow2", size="64M")
        busy = {"device": "node-Spare", "target": "node-Busy", "sync": "none", "job-id": "busy"}
        machine.send("blockdev-backup", busy)  # sent as it is: the checks refuse a job on a node outside the chain
        deadline = time.monotonic() + 30
        while machine.registry.running("busy") is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the Job comes with QEMU's first event about it
        machine.job("busy").pause()
        with read_only_folder(lab.path / "ro"):
            yield machine
        machine.job("busy").resume().cancel().wait(timeout=30)
        assert machine.verify(expected_view("ABCD")), "after the whole catalogue the guest reads as at the start"


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under the folder with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def jobs(vm: qb.Machine) -> list[tuple]:
    return [(j["device"], j["type"], j["status"], j["offset"], j["len"]) for j in vm.query("query-block-jobs")]


# -- a QEMU that is not QEMU ---------------------------------------------------------------------
def impostor(greeting: bytes | None) -> Callable[[qb.Machine], object]:
    """A row's call: ``qb.connect`` to a unix socket served by something else, which says ``greeting`` (None:
    nothing, ``b""``: hangs up); the server and its thread are gone when the call returns, and no other thread is
    left."""

    def call(vm: qb.Machine) -> object:
        path = vm.host_path("impostor.sock")
        before = set(threading.enumerate())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(4)
            stop = threading.Event()
            thread = threading.Thread(target=serve, args=(server, greeting, stop))
            thread.start()
            try:
                return qb.connect(path, timeout=1.0)
            finally:
                stop.set()
                thread.join(timeout=10)
                path.unlink()
                assert set(threading.enumerate()) == before, "connect left a thread behind"

    return call


def serve(server: socket.socket, greeting: bytes | None, stop: threading.Event) -> None:
    server.settimeout(0.05)
    peers = []
    while not stop.is_set():
        try:
            peer, _ = server.accept()
        except TimeoutError:
            continue
        peers.append(peer)
        if greeting == b"":
            peer.close()  # hangs up at once
        elif greeting is not None:
            peer.sendall(greeting)
    for peer in peers:
        peer.close()


# -- the catalogue -------------------------------------------------------------------------------
InputError, CommandError = qb.InputError, qb.CommandError
Row = tuple[str, Callable[[qb.Machine], object], type, list[str]]
# Each job command with arguments that would work; a row changes one of them.
JOB_CALLS = {
    "stream": ("block_stream", {"device": "node-C", "base_node": "node-A"}),
    "commit": ("block_commit", {"device": "node-D", "top_node": "node-C"}),
    "drive-mirror": ("drive_mirror", {"device": "node-D", "target": "e.qcow2", "sync": "full"}),
    "blockdev-mirror": ("blockdev_mirror", {"device": "node-D", "target": "node-T", "sync": "full"}),
    "drive-backup": ("drive_backup", {"device": "node-D", "target": "e.qcow2", "sync": "full"}),
    "blockdev-backup": ("blockdev_backup", {"device": "node-D", "target": "node-T", "sync": "full"}),
    "snapshot": (
        "blockdev_snapshot_sync",
        {"node_name": "node-D", "snapshot_file": "e.qcow2", "snapshot_node_name": "node-E"},
    ),
}
FILE_COMMANDS = {"drive-mirror": "target", "drive-backup": "target", "snapshot": "snapshot_file"}


def call(command: str, **changes: object) -> Callable[[qb.Machine], object]:
    """The good call of ``command`` with ``changes`` to its arguments (None: leave that argument out)."""
    method, good = JOB_CALLS[command]
    arguments = {key: value for key, value in {**good, **changes}.items() if value is not None}
    return lambda vm: getattr(vm, method)(**arguments)


def rows(case: str, commands: list[str], words: list[str], error: type = InputError, **changes: object) -> list[Row]:
    """One row per command, each with the same bad change."""
    return [(f"{command}-{case}", call(command, **changes), error, words) for command in commands]


def file_rows(case: str, name: str, words: list[str], **changes: object) -> list[Row]:
    """One row per command that takes a file to create: the target, or the snapshot's overlay, is ``name``."""
    return [
        (f"{command}-{case}", call(command, **{role: name}, **changes), InputError, words)
        for command, role in FILE_COMMANDS.items()
    ]


def shell(line: str) -> Callable[[qb.Machine], object]:
    return lambda vm: vm.shell(line)


JOBS = [name for name in JOB_CALLS if name != "snapshot"]
COPIES = ["drive-mirror", "blockdev-mirror", "drive-backup", "blockdev-backup"]
VERBS = [f"block-job-{verb} device=nope" for verb in ("cancel", "complete", "pause", "resume")] + [
    "block-job-set-speed device=nope speed=0",
    *(f"job-{verb} id=nope" for verb in ("cancel", "dismiss", "finalize")),
]
ROWS: list[Row] = [
    # unknown node, for every command that names one
    *rows("unknown-device", JOBS, ["'node-X'", NODES], device="node-X"),
    *rows("unknown-node", ["snapshot"], ["node-name 'node-X'", NODES], node_name="node-X"),
    *rows("unknown-top", ["commit"], ["top 'node-X'", NODES], top_node="node-X"),
    *rows("unknown-base", ["stream", "commit"], ["base 'node-X'", NODES], base_node="node-X"),
    *rows("unknown-target", ["blockdev-mirror", "blockdev-backup"], ["'node-Z'", "blockdev_add"], target="node-Z"),
    ("unknown-device-write", lambda vm: vm.write("virtio9", 0, "64k"), qb.Error, ["virtio9"]),
    # unknown job, through the Job and through every typed verb
    ("unknown-job", lambda vm: vm.job("nope"), InputError, ["'nope'", "busy"]),
    *((f"unknown-job-{line.split()[0]}", shell(line), InputError, ["'nope'", "busy"]) for line in VERBS),
    ("job-verb-without-id", shell("block-job-cancel"), InputError, ["device=", "busy"]),
    # base not below top, commit of the base, stream onto itself
    *rows("base-above-top", ["stream"], ["'node-C'", "not below", "node-A"], device="node-B", base_node="node-C"),
    *rows("base-above-top", ["commit"], ["'node-C'", "not below", "node-A"], top_node="node-B", base_node="node-C"),
    *rows("base-is-top", ["commit"], ["'node-B'", "itself", "node-A"], top_node="node-B", base_node="node-B"),
    *rows("of-the-base", ["commit"], ["'node-A'", "base image"], top_node="node-A"),
    *rows("onto-itself", ["stream"], ["'node-D'", "itself", "node-C"], device="node-D", base_node="node-D"),
    *rows("of-the-base", ["stream"], ["'node-A'", "no backing"], device="node-A", base_node=None),
    # a target or an overlay that is an image of the chain, or of another job
    *file_rows("onto-chain", "c.qcow2", ["'c.qcow2'", "already open as node-C"]),
    *file_rows("onto-chain-path", "./b.qcow2", ["'./b.qcow2'", "node-B", "new file name"], mode="existing"),
    *file_rows("onto-busy-target", "busy.qcow2", ["'busy.qcow2'", "node-Busy"]),
    *rows("onto-chain", ["blockdev-mirror", "blockdev-backup"], ["'node-B'", "part of the chain"], target="node-B"),
    (
        "drive-mirror-onto-chain-absolute",
        lambda vm: vm.drive_mirror(device="node-D", target=str(vm.host_path("a.qcow2")), sync="top", mode="existing"),
        InputError,
        ["a.qcow2", "node-A"],
    ),
    # target folder missing or unwritable; an existing file without mode=existing (QEMU would replace it)
    *file_rows("missing-folder", "no/such/e.qcow2", ["'no/such/e.qcow2'", "does not exist", "create the folder"]),
    *file_rows("unwritable-folder", "ro/e.qcow2", ["'ro/e.qcow2'", "not writable"]),
    *file_rows("exists", "exists.qcow2", ["'exists.qcow2'", "already exists", "mode='existing'"]),
    *file_rows("exists-absolute-paths", "exists.qcow2", ["'exists.qcow2'", "already exists"], mode="absolute-paths"),
    *file_rows("missing-existing", "none.qcow2", ["'none.qcow2'", "does not exist"], mode="existing"),
    # wrong format: unknown to QEMU, or not what the existing file holds
    *file_rows("unknown-format", "e.qcow2", ["'qcow3'", "format='qcow2'"], format="qcow3"),
    *rows("unknown-format-vmdk", ["drive-backup"], ["'vmdk2'", "format='vmdk'"], format="vmdk2"),
    *file_rows(
        "format-disagrees", "exists.qcow2", ["'raw'", "finds qcow2", "format='qcow2'"], mode="existing", format="raw"
    ),
    # invalid sync modes
    *rows("bad-sync", COPIES, ["'everything'", "full, top, none"], sync="everything"),
    *rows(
        "mirror-sync-incremental", ["drive-mirror", "blockdev-mirror"], ["'incremental'", "mirror"], sync="incremental"
    ),
    *rows("no-sync", COPIES, ["sync="], sync=None),
    ("backup-sync-Full", shell("blockdev-backup device=node-D target=node-T sync=Full"), InputError, ["'Full'"]),
    # negative speed, as an int, as a string, on the shell and on a running job
    *rows("negative-speed", JOBS, ["speed -1", "0 or more"], speed=-1),
    *rows("negative-speed-text", JOBS, ["speed '-4M'", "'4M'"], speed="-4M"),
    (
        "shell-negative-speed",
        shell("blockdev-mirror device=node-D target=node-T sync=full speed=-65536"),
        InputError,
        ["speed -65536"],
    ),
    ("set-speed-negative", shell("block-job-set-speed device=busy speed=-1"), InputError, ["speed -1"]),
    ("job-set-speed-negative", lambda vm: vm.job("busy").set_speed(-1), InputError, ["job 'busy': speed -1"]),
    # a job id in use while that job runs
    *rows("job-id-in-use", JOBS, ["'busy'", "already in use"], job_id="busy"),
    ("shell-job-id-in-use", shell("block-stream device=node-D job-id=busy"), InputError, ["'busy'", "already in use"]),
    # arguments and commands QEMU does not have
    *rows("misspelt-argument", ["stream"], ["'bsae-node'", "base-node"], bsae_node="node-A"),
    *rows("misspelt-argument", ["drive-mirror"], ["'fromat'", "format"], fromat="qcow2"),
    (
        "unknown-method",
        lambda vm: vm.block_stremm(device="node-D"),
        qb.UnknownCommand,
        ["block-stremm", "block-stream"],
    ),
    ("unknown-command", lambda vm: vm.execute("query-nothing"), qb.UnknownCommand, ["query-nothing"]),
    ("shell-unknown-command", shell("block-stremm device=node-D"), qb.UnknownCommand, ["block-stremm"]),
    # qmp-shell lines that do not parse
    ("shell-no-value", shell("block-stream device"), InputError, ["'device'", "key=value"]),
    ("shell-empty", shell("   "), InputError, ["empty", "query-block-jobs"]),
    ("shell-no-key", shell("block-stream =node-D"), InputError, ["'=node-D'", "key=value"]),
    ("shell-open-quote", shell('block-stream device="node-D'), InputError, ["node-D", "not closed"]),
    ("shell-stray-quote", shell("block-stream device=node-D '"), InputError, ["not closed"]),
    ("shell-no-command", shell("device=node-D job-id=job0"), InputError, ["'device=node-D'", "command first"]),
    ("shell-twice", shell("block-stream device=node-D device=node-C"), InputError, ["'device'", "twice"]),
    ("shell-bad-json", shell('nbd-server-start addr={"type":'), InputError, ["not valid JSON"]),
    ("shell-empty-key-part", shell("blockdev-add file.=x"), InputError, ["'file.=x'", "key=value"]),
    ("shell-nested-twice", shell("blockdev-add file=x file.driver=file"), InputError, ["'file.driver'", "object"]),
    # where QEMU is the judge: its words, a what-to-do, and nothing changed
    (
        "qemu-refusal",
        lambda vm: vm.block_dirty_bitmap_add(node="node-Q", name="b0"),
        CommandError,
        ["node-Q", "GenericError", "vm.chain()"],
    ),
    # a socket where something other than QEMU listens
    ("impostor-http", impostor(b"HTTP/1.1 400 Bad Request\r\n\r\n"), InputError, ["not a QEMU", "HTTP/1.1"]),
    ("impostor-silent", impostor(None), InputError, ["not a QEMU", "said nothing"]),
    ("impostor-garbage", impostor(b"\x00\xff{{{garbage\n"), InputError, ["not a QEMU", "garbage"]),
    ("impostor-other-json", impostor(b'{"hello": "world"}\n'), InputError, ["not a QEMU", "hello"]),
    ("impostor-qmp-not-qemu", impostor(b'{"QMP": {"version": {}}}\n'), InputError, ["not a QEMU", "no QEMU version"]),
    ("impostor-hangs-up", impostor(b""), InputError, ["not a QEMU", "closed the connection"]),
    (
        "connect-to-an-image-file",
        lambda vm: qb.connect(vm.host_path("a.qcow2"), timeout=0.3),
        InputError,
        ["a.qcow2", "not a QEMU", "nothing accepts"],
    ),
]


@pytest.mark.parametrize(("call", "error", "words"), [row[1:] for row in ROWS], ids=[row[0] for row in ROWS])
def test_bad_input_is_a_sentence_and_changes_nothing(vm, call, error, words, request):
    if "unwritable" in request.node.callspec.id and READ_ONLY:
        pytest.skip(READ_ONLY["why"])
    folder = vm.host_path(".")
    sent, files, chain, running = len(vm.history), listing(folder), str(vm.chain()), jobs(vm)
    with pytest.raises(error) as caught:
        call(vm)
    text = str(caught.value)
    assert text.endswith(".") and "\n" not in text and "Traceback" not in text, text
    assert caught.value.todo, f"no what-to-do in: {text}"
    for word in words:
        assert word in text, f"{word!r} missing from: {text}"
    if error is CommandError:
        assert len(vm.history) == sent + 1 and vm.history.iloc[-1]["outcome"] == "error", "one command, refused"
    else:
        assert len(vm.history) == sent, "nothing is sent when a check refuses"
    assert str(vm.chain()) == chain == SEED
    assert jobs(vm) == running
    assert listing(folder) == files, "no file in the lab may change"
    assert vm.read_matches("virtio0", "3M", "1M", 0xD4), "the session still answers, the guest view intact"


# -- names that must work ------------------------------------------------------------------------
BASE = "my disk é.qcow2"
HOSTILE = {  # overlay letter -> a file name a shell would act on
    "B": 'a"; rm -rf x; .qcow2',
    "C": "$(touch pwned).qcow2",
    "D": "`touch pwned` it's \\ back.qcow2",
}
MIRROR = "--help & | > < *?.qcow2"
BACKUP = "comma,driver=raw;[x] #1.qcow2"
ATTACHED = "ünï 'single' \"double\".qcow2"


def test_spaces_non_ascii_and_hostile_names_are_data(lab):
    """Every operation on images named to break a shell, a qmp-shell line or an option string: each works, the
    data is right, and nothing was executed (no ``pwned`` file, the folder ``x`` still there)."""
    sentinel = lab.file("x")
    sentinel.mkdir()
    (sentinel / "keep").write_text("kept")
    lab.create(BASE, size="64M")
    lab.write(BASE, 0, "4M", pattern=0xA1)
    vm = lab.launch(BASE, node_name="node-A")
    below = "node-A"
    for offset, (letter, name) in enumerate(HOSTILE.items(), start=1):
        arguments = {
            "node-name": below,
            "snapshot-file": name,
            "snapshot-node-name": f"node-{letter}",
            "format": "qcow2",
        }
        vm.shell(format_line("blockdev-snapshot-sync", arguments))  # the qmp-shell line quotes the name
        vm.write("virtio0", f"{offset}M", "1M", pattern=int(f"0x{letter}{offset + 1}", 16))  # HMP qemu-io
        below = f"node-{letter}"
    names = [BASE, *HOSTILE.values()]
    assert str(vm.chain()) == " <-- ".join(f"[{name}]" for name in names)
    assert str(lab.chain(HOSTILE["D"])) == str(vm.chain()), "the chain on disk is the same"
    assert vm.verify(expected_view("ABCD"))

    vm.block_stream(device="node-C", base_node="node-A", job_id="stream").wait(timeout=60)
    assert str(vm.chain()) == f"[{BASE}] <-- [{HOSTILE['C']}] <-- [{HOSTILE['D']}]"
    vm.block_commit(device="node-D", top_node="node-C", base_node="node-A", job_id="commit").wait(timeout=60)
    assert str(vm.chain()) == f"[{BASE}] <-- [{HOSTILE['D']}]" == str(lab.chain(HOSTILE["D"]))
    assert vm.verify(expected_view("ABCD"))

    mirror = vm.drive_mirror(device="node-D", target=MIRROR, sync="full", format="qcow2", job_id="mirror")
    mirror.wait_ready(timeout=60).cancel().wait(timeout=60)  # after READY: a point-in-time copy
    vm.drive_backup(device="node-D", target=BACKUP, sync="top", format="qcow2", job_id="backup").wait(timeout=60)
    lab.create(ATTACHED, size="64M")
    vm.blockdev_add(driver="qcow2", node_name="node-K", file={"driver": "file", "filename": ATTACHED})
    vm.blockdev_backup(device="node-D", target="node-K", sync="full", job_id="copy").wait(timeout=60)
    assert [job.outcome for job in vm.job_list] == ["completed"] * 5
    for copy in (MIRROR, BACKUP, ATTACHED):
        assert vm.compare(copy), f"{copy} holds what the guest reads"
    assert str(lab.chain(BACKUP)) == f"[{BASE}] <-- [{BACKUP}]", "sync=top keeps the backing file, by its name"
    assert str(lab.chain(MIRROR)) == f"[{MIRROR}]"
    assert str(vm.chain()) == f"[{BASE}] <-- [{HOSTILE['D']}]"
    assert vm.verify(expected_view("ABCD"))

    assert (sentinel / "keep").read_text() == "kept"
    for folder in (lab.path, Path.cwd(), Path("/tmp"), Path.home()):
        assert not list(folder.glob("pwned*")), f"something ran a name as a command in {folder}"
