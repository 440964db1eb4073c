"""A session written out and played back: as a qmp-shell script through QEMU's own qmp-shell, and as a
pytest file that rebuilds the lab, replays it with the toolkit and checks what the session saw."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from qemu.qmp.qmp_shell import QMPShell

import qblocknb as qb
from qblocknb.live.recorder import RecordingLab
from qblocknb.model.qmpshell import parse_line
from qblocknb.model.script import QUOTED_NOTE, qmp_shell_sends_as_written, read_script
from qblocknb.teaching.seedchain import MiB, build_seed_chain, expected_view

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"
FINAL = "[a.qcow2] <-- [c.qcow2]"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    """Seed chain, a snapshot, a stream, an active commit completed, a mirror cancelled, a refusal; exported."""
    folder = tmp_path_factory.mktemp("session")
    with RecordingLab(folder / "lab") as lab:
        vm = build_seed_chain(lab)
        vm.blockdev_snapshot_sync(
            node_name="node-D", snapshot_file="e.qcow2", snapshot_node_name="node-E", format="qcow2"
        )
        vm.write(vm.device, 4 * MiB, MiB, pattern=0xE5)
        vm.block_stream(device="node-C", base_node="node-A", job_id="job0").wait(timeout=60)
        commit = vm.block_commit(device="node-E", base_node="node-C", job_id="job1")
        commit.wait_ready(timeout=60).complete().wait(timeout=60)
        lab.create("m.qcow2", size="64M")
        vm.blockdev_add(driver="qcow2", node_name="m", file={"driver": "file", "filename": "m.qcow2"})
        mirror = vm.blockdev_mirror(device="node-C", target="m", sync="full", job_id="job2")
        mirror.wait_ready(timeout=60).cancel().wait(timeout=60)
        with pytest.raises(qb.CommandError, match="Permission conflict"):  # sent past the toolkit's own check
            vm.send("blockdev-backup", {"device": "node-C", "target": "node-A", "sync": "full", "job-id": "bad"})
        vm.query_block_jobs()  # a query: noted, not replayed
        assert str(vm.chain()) == FINAL
        assert vm.verify([*expected_view("ABCD"), (4 * MiB, MiB, 0xE5)])
        assert vm.verify([*expected_view("ABCD"), (4 * MiB, MiB, 0xE5)], image="m.qcow2"), "the mirror copied"
        records = list(vm.session.history.records)
        script = vm.history.to_script(folder / "session.qmp")
        test_file = vm.history.to_pytest(folder / "test_replayed_session.py")
        yield {"lab_steps": list(lab.steps), "records": records, "script": script, "test": test_file}


def test_the_script_reads_back_as_the_commands_sent(session):
    text = session["script"].read_text()
    sent = [(r.command, r.arguments) for r in session["records"] if not r.command.startswith("query-") and not r.error]
    steps = read_script(text)
    assert [(name, arguments) for kind, name, arguments in steps if kind == "command"] == sent
    waits = [(job, status) for kind, job, status in steps if kind == "wait"]
    assert waits == [
        ("job0", "concluded"),
        ("job1", "ready"),
        ("job1", "concluded"),
        ("job2", "ready"),
        ("job2", "concluded"),
    ]
    assert "# refused: QEMU refused 'blockdev-backup'" in text and "# query-block-jobs" in text
    assert text.count(QUOTED_NOTE) == 4, "each guest write is an HMP line qmp-shell cannot send as written"


def qmp_shell_reads(line: str) -> dict:
    """The arguments QEMU's qmp-shell builds from a line (its own value parser, top-level keys)."""
    _, *words = line.split()
    return {key: QMPShell._parse_value(value) for key, _, value in (w.partition("=") for w in words)}


class Shell:
    """QEMU's qmp-shell, fed one line at a time; its replies read back as JSON."""

    def __init__(self, socket: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [str(QMP_SHELL), str(socket)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def send(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + 30
        while True:
            text = self.lines.get(timeout=max(0.1, deadline - time.monotonic())).replace("(QEMU) ", "").strip()
            if text.startswith("{"):
                return json.loads(text)

    def wait(self, job: str, status: str) -> None:
        """Poll query-block-jobs through the shell until ``job`` is ready, or gone once concluded."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            jobs = {j["device"]: j for j in self.send("query-block-jobs")["return"]}
            if (status == "ready" and jobs.get(job, {}).get("ready")) or (status == "concluded" and job not in jobs):
                return
            time.sleep(0.05)
        raise AssertionError(f"{job} did not become {status} through qmp-shell")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=10)


def test_qmp_shell_replays_the_script_to_the_same_chain(session, lab):
    for _, method, kwargs in session["lab_steps"]:  # the images the session made offline, made ahead
        getattr(lab, method)(**kwargs)
    vm = lab.launch("a.qcow2", node_name="node-A")
    socket = vm.session.socket_path
    vm.session.close()  # QEMU's monitor serves one client at a time: qmp-shell's turn
    shell, skipped = Shell(socket), []
    try:
        lines = session["script"].read_text().splitlines()
        for previous, line in zip(["", *lines], lines, strict=False):
            if line.startswith("# wait: "):
                shell.wait(*line.split()[2:])
            elif line and not line.startswith("#"):
                command, arguments = parse_line(line)
                assert qmp_shell_sends_as_written(command, arguments) == (previous != QUOTED_NOTE)
                if previous == QUOTED_NOTE:
                    assert qmp_shell_reads(line) != arguments, "the note is right: qmp-shell keeps the quotes"
                    skipped.append(command)
                    continue
                assert "return" in shell.send(line), line
    finally:
        shell.close()
    assert skipped == ["human-monitor-command"] * 4
    again = qb.connect(socket)
    try:
        assert str(again.chain()) == FINAL
        assert again.verify(expected_view("A")), "no guest write went through qmp-shell; A's data did"
        assert again.verify(expected_view("A"), image=lab.file("m.qcow2")), "the mirror copied before it was cancelled"
    finally:
        again.quit()


def run_pytest(test_file: Path, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir()
    copy = shutil.copy(test_file, folder)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(folder / "tmp"), copy],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_exported_pytest_file_replays_the_session_and_passes(session, tmp_path):
    source = session["test"].read_text()
    assert source.count("assert_observed(") >= 10 and "with pytest.raises(qb.Error):" in source
    assert f"assert_observed(vm, {FINAL!r}" in source and "wait_ready(" in source
    done = run_pytest(session["test"], tmp_path / "run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout


def test_a_tampered_session_makes_the_exported_test_fail(session, tmp_path):
    source = session["test"].read_text()
    tampered = tmp_path / "test_tampered_session.py"
    last = source.rindex(repr(FINAL))
    tampered.write_text(
        source[:last] + repr("[a.qcow2] <-- [b.qcow2] <-- [c.qcow2]") + source[last + len(repr(FINAL)) :]
    )
    done = run_pytest(tampered, tmp_path / "run")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"the chain is {FINAL}, the session saw [a.qcow2] <-- [b.qcow2] <-- [c.qcow2]" in done.stdout


def test_a_plain_lab_session_writes_a_script_but_says_why_not_a_test(seed_vm, tmp_path):
    seed_vm.block_stream(device="node-D", job_id="job0").wait(timeout=60)
    script = seed_vm.history.iloc[-1:].to_script(tmp_path / "last.qmp")
    assert read_script(script.read_text())[0] == ("command", "block-stream", {"device": "node-D", "job-id": "job0"})
    assert "# wait: job0 concluded" in script.read_text(), "any session marks where its jobs ended"
    with pytest.raises(qb.Error, match="RecordingLab"):
        seed_vm.history.to_pytest(tmp_path / "test_x.py")
    assert str(seed_vm.chain()) == "[d.qcow2]" and seed_vm.verify(expected_view("ABCD"))
