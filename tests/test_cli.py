"""The ``qblocknb`` command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qblocknb.cli", *args], capture_output=True, text=True, timeout=300)


def test_demo_performs_and_verifies_the_four_operations():
    done = run("demo")
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split()[1] for line in verdicts] == ["block-stream", "block-commit", "drive-mirror", "drive-backup"]
    assert all(line.startswith("PASS") and "guest data verified" in line for line in verdicts)
    assert "before: [a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]" in done.stdout
    assert "after:  [a.qcow2] <-- [d.qcow2]" in done.stdout
    assert "Images are identical" in done.stdout


def test_chain_prints_an_on_disk_chain(lab):
    lab.create("a.qcow2", size="16M")
    lab.create("b.qcow2", backing="a.qcow2")
    done = run("chain", str(lab.file("b.qcow2")), "--long")
    assert done.returncode == 0
    first, *rest = done.stdout.splitlines()
    assert first == "[a.qcow2] <-- [b.qcow2]"
    assert "b.qcow2  qcow2  virtual 16 MiB" in rest[0]


def test_chain_of_a_missing_image_is_one_sentence(tmp_path):
    done = run("chain", str(tmp_path / "nope.qcow2"))
    assert done.returncode == 2
    assert done.stderr.startswith("qblocknb: inspecting nope.qcow2 failed")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
