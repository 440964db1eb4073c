"""The dashboard's health line against a real QEMU: green when the doctor finds nothing, amber with the finding
listed while a job waits in READY, green again after its Fix button, the data checked; and how often it asks.
"""

from __future__ import annotations

import itertools
import time
from html import unescape

import pytest
from test_widgets import wait_for

from qblocknb.teaching.seedchain import expected_view
from qblocknb.widgets import Dashboard
from qblocknb.widgets.health import Health


@pytest.fixture
def dashboard(seed_vm):
    board = Dashboard(seed_vm)
    yield board
    board.close()


def test_a_ready_commit_turns_the_line_amber_and_its_fix_turns_it_green(dashboard, seed_vm, lab):
    health = dashboard.health
    wait_for(lambda: health.colour == "green", "a healthy VM's green line")
    assert len(health.findings) == 0 and "nothing wrong found" in health.line.value
    assert health.fixes.children == () and health.details.titles == ("findings: nothing wrong found",)

    job = seed_vm.block_commit(device="node-D", job_id="job0")
    job.wait_ready(timeout=60)
    wait_for(lambda: health.colour == "amber", "the line to turn amber on READY")
    assert [(f.kind, f.subject, f.severity) for f in health.findings] == [("job", "job0", "warning")]
    assert "job0" in unescape(health.line.value) and "READY" in unescape(health.table.value)
    assert health.details.titles == ("findings: 1 warning",)
    (button,) = health.fixes.children
    assert button.description == "Fix job0: complete the job (pivot)"
    assert button.tooltip == "block-job-complete device=job0"

    button.click()
    assert "job0: complete the job (pivot), done (block-job-complete device=job0)" in health.outcome.value
    job.wait(timeout=60)
    assert job.outcome == "completed" and str(seed_vm.chain()) == "[a.qcow2]"
    wait_for(lambda: not health.findings.about("job", "job0"), "the READY finding to clear")
    retired = {f.subject for f in health.findings}  # what is left: the commit's invalid layers, on disk
    assert retired == {"b.qcow2", "c.qcow2", "d.qcow2"} and health.colour == "amber"
    for name in retired:
        lab.file(name).unlink()
    health.check_button.click()  # files on disk change without an event: the button reads again
    wait_for(lambda: health.colour == "green", "the line to turn green again")
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_fix_that_fails_says_why_in_a_sentence(seed_vm):
    job = seed_vm.block_commit(device="node-D", job_id="job0")
    job.wait_ready(timeout=60)
    health = Health(seed_vm)
    try:
        wait_for(lambda: health.colour == "amber", "the READY finding")
        finding = health.findings[0]
        job.complete()
        job.wait(timeout=60)
        health.fix(finding)  # the job is gone: QEMU refuses
        assert "job0: complete the job (pivot) failed" in unescape(health.outcome.value)
        assert "qb-error" in health.outcome.value
    finally:
        health.close()
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_burst_of_pokes_gives_one_diagnosis_a_second(seed_vm):
    health = Health(seed_vm, gap=1.0)
    try:
        wait_for(lambda: health.colour == "green", "the first diagnosis")
        runs = []
        health._refresher.action = lambda: runs.append(time.monotonic()) or health.check()
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            health.poke()  # as 20 ms job samples and events would
            time.sleep(0.02)
        assert 1 <= len(runs) <= 4, runs
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(runs)), runs
    finally:
        health.close()


def test_set_usable_disables_every_button(seed_vm):
    job = seed_vm.block_commit(device="node-D", job_id="job0")
    job.wait_ready(timeout=60)
    health = Health(seed_vm)
    try:
        wait_for(lambda: health.fixes.children, "a Fix button")
        health.set_usable("QEMU is stopped")
        assert health.check_button.disabled and all(b.disabled for b in health.fixes.children)
        health.set_usable(None)
        assert not health.check_button.disabled and not any(b.disabled for b in health.fixes.children)
    finally:
        health.close()
    job.complete()
    job.wait(timeout=60)
    assert seed_vm.verify(expected_view("ABCD"))
