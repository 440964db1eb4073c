"""The widgets against a real QEMU, without a browser: click, then watch the traits change.

Views refresh on their own threads, so the tests wait for a trait with a
bounded poll (``wait_for``) instead of asserting after a fixed delay.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from html import unescape

import pytest

import qblocknb as qb
from qblocknb.migration.flow import StorageMigration, launch_destination
from qblocknb.teaching.seedchain import expected_view
from qblocknb.widgets import ChainView, Console, Dashboard, JobMonitor
from qblocknb.widgets.migrationview import MigrationView

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def enabled(monitor: JobMonitor) -> set[str]:
    return {verb for verb, button in monitor.buttons.items() if not button.disabled}


def colours(monitor: JobMonitor) -> dict[str, str]:
    """The buttons that have a colour, and which."""
    return {verb: button.button_style for verb, button in monitor.buttons.items() if button.button_style}


def view_text(view: ChainView) -> str:
    return unescape(view.svg)


@pytest.fixture
def dashboard(seed_vm):
    board = Dashboard(seed_vm)
    yield board
    board.close()


def test_a_snapshot_form_previews_then_runs_and_the_view_redraws(dashboard, seed_vm):
    stream = dashboard.forms["block-stream"]
    stream.fields["base-node"].value = "node-B"  # a choice, which must survive the new chain
    form = dashboard.forms["blockdev-snapshot-sync"]
    assert form.error.value == ""
    assert '"snapshot-file": "e.qcow2"' in unescape(form.command_view.value)
    assert "(QEMU) blockdev-snapshot-sync node-name=node-D snapshot-file=e.qcow2" in unescape(form.command_view.value)
    preview = unescape(form.preview.value)
    assert "e.qcow2" in preview and "new" in preview  # drawn before Run
    before = dashboard.chain_view.svg
    assert str(dashboard.chain_view.chain) == SEED

    form.run_button.click()

    wait_for(lambda: "e.qcow2" in view_text(dashboard.chain_view), "the chain view to show e.qcow2")
    assert dashboard.chain_view.svg != before
    assert str(dashboard.chain_view.chain) == f"{SEED} <-- [e.qcow2]"
    assert "active layer · virtio0" in view_text(dashboard.chain_view)
    assert str(seed_vm.chain()) == f"{SEED} <-- [e.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))
    assert form.fields["snapshot-file"].value == "f.qcow2"  # ready for the next one
    assert form.fields["node-name"].value == "node-E"
    commit = dashboard.forms["block-commit"]  # untouched: its defaults follow the new active layer
    wait_for(lambda: commit.fields["device"].value == "node-E", "the commit form to follow the chain")
    assert commit.fields["top-node"].value == "node-E"
    assert stream.fields["device"].value == "node-E" and stream.fields["base-node"].value == "node-B"


def test_a_stream_form_starts_a_job_that_gets_a_monitor(dashboard, seed_vm):
    form = dashboard.forms["block-stream"]
    form.fields["device"].value = "node-D"
    form.fields["base-node"].value = "node-A"
    assert "[a.qcow2] <-- [d.qcow2]" in unescape(form.preview.value) or "re-pointed" in unescape(form.preview.value)
    form.run_button.click()
    job = form.result
    assert isinstance(job, qb.Job)
    wait_for(lambda: job in dashboard.monitors, "a monitor for the stream")
    job.wait()
    wait_for(lambda: "retired:node-B" in view_text(dashboard.chain_view), "the retired images in the view")
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
    assert "still valid" in view_text(dashboard.chain_view)
    assert seed_vm.verify(expected_view("ABCD"))
    monitor = dashboard.monitors[job]
    wait_for(lambda: "completed" in monitor.status.value, "the monitor to show the outcome")
    assert enabled(monitor) == set() and monitor.speed.disabled
    wait_for(lambda: bytes(monitor.plot.value).startswith(b"\x89PNG"), "the progress plot")
    wait_for(lambda: monitor.plot.layout.display is None, "the plot shown in place of its placeholder")
    wait_for(lambda: "block-stream" in dashboard.history.value, "the history frame")


def test_complete_on_an_active_commit_pivots(dashboard, seed_vm):
    form = dashboard.forms["block-commit"]
    assert (form.fields["device"].value, form.fields["top-node"].value, form.fields["base-node"].value) == (
        "node-D",
        "node-D",
        "node-A",
    )
    form.fields["speed"].value = "64k"  # 3 MiB at 64 KiB/s: running long enough to look at
    form.run_button.click()
    job = form.result
    wait_for(lambda: job in dashboard.monitors, "a monitor for the commit")
    monitor = dashboard.monitors[job]
    wait_for(lambda: job.status == "running" and enabled(monitor) == {"cancel", "pause"}, "running buttons")
    wait_for(lambda: colours(monitor) == {"cancel": "warning"}, "a plain Complete while it is disabled")
    assert not monitor.speed.disabled

    sent = len(seed_vm.history)
    monitor.buttons["complete"].click()  # what a disabled button would do if clicked anyway
    assert "complete is accepted only once the job is ready" in monitor.error.value
    assert len(seed_vm.history) == sent

    monitor.buttons["pause"].click()
    wait_for(lambda: job.status == "paused" and enabled(monitor) == {"cancel", "resume"}, "paused buttons")
    monitor.buttons["resume"].click()
    wait_for(lambda: "pause" in enabled(monitor), "the job to run again")
    monitor.speed.value = 0  # the slider: unlimited
    wait_for(lambda: job.status == "ready" and enabled(monitor) == {"complete", "cancel", "pause"}, "ready buttons")
    wait_for(lambda: colours(monitor) == {"complete": "success", "cancel": "warning"}, "Complete green once enabled")
    wait_for(lambda: "waiting for Complete" in monitor.status.value, "the status line to say what READY waits for")

    monitor.buttons["complete"].click()
    job.wait()
    assert job.outcome == "completed"
    assert str(seed_vm.chain()) == "[a.qcow2]"
    assert seed_vm.chain().active.device == "virtio0"
    assert seed_vm.verify(expected_view("ABCD"))
    wait_for(lambda: str(dashboard.chain_view.chain) == "[a.qcow2]", "the view to show the pivot")
    shown = view_text(dashboard.chain_view)
    assert "active layer · virtio0" in shown and "invalid: do not use" in shown
    wait_for(lambda: enabled(monitor) == set(), "every button disabled once the job ended")
    wait_for(lambda: colours(monitor) == {}, "no coloured button once the job ended")


def test_a_monitor_shows_a_sentence_until_its_first_plot(seed_vm):
    job = seed_vm.block_stream(device="node-D", base_node="node-B", job_id="job0", speed=64 << 10)
    monitor = JobMonitor(job, plot_interval=3600)  # its thread will not draw while the test looks
    try:
        assert monitor.plot.layout.display == "none" and not bytes(monitor.plot.value), "no broken-image icon"
        assert "progress plot appears here" in monitor.plot_note.value
        assert monitor.plot_note.layout.display is None
        monitor.draw_plot()
        assert bytes(monitor.plot.value).startswith(b"\x89PNG")
        assert monitor.plot.layout.display is None and monitor.plot_note.layout.display == "none"
        job.set_speed(0)
        job.wait()
    finally:
        monitor.close()
    assert job.outcome == "completed"
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]"
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_finished_jobs_monitor_says_what_its_status_means_beside_qemus_word(seed_vm):
    job = seed_vm.block_stream(device="node-D", base_node="node-B", job_id="job0")
    monitor = JobMonitor(job, plot=False)
    try:
        job.wait()
        wait_for(lambda: "(QEMU: null)" in monitor.status.value, "QEMU's word for a dismissed job, in small print")
        status = monitor.status.value
        assert "<b>ended · dismissed</b>" in status and "completed" in status
        assert re.search(r"<small[^>]*>\(QEMU: null\)</small>", status) and "<b>null</b>" not in status
    finally:
        monitor.close()


BAD_VALUES = [
    ("block-stream", "speed", "fast", "size 'fast' is not understood"),
    ("block-stream", "job-id", " ", "the job id is empty"),
    ("blockdev-snapshot-sync", "snapshot-node-name", "node-B", "'node-B' is already taken"),
    ("blockdev-snapshot-sync", "node-name", "node-B", "not the active layer"),
    ("block-commit", "device", "node-C", "QEMU wants the root node"),
    ("drive-mirror", "target", "missing/e.qcow2", "does not exist"),
    ("drive-backup", "sync", "incremental", "needs a bitmap"),
]


def test_a_bad_value_shows_a_sentence_and_sends_nothing(dashboard, seed_vm):
    for command, field, value, message in BAD_VALUES:
        form = dashboard.forms[command]
        good = form.fields[field].value
        form.fields[field].value = value
        assert message in unescape(form.error.value), command
        assert form.preview.value == "" and form.command_view.value == ""
        sent = len(seed_vm.history)
        form.run_button.click()
        assert message in unescape(form.error.value)
        assert form.result is None
        assert len(seed_vm.history) == sent
        form.fields[field].value = good
        assert form.error.value == "" and form.preview.value, f"{command} recovers once {field} is {good!r}"
    assert str(seed_vm.chain()) == SEED


def test_a_single_image_has_nothing_to_stream_or_commit_until_a_snapshot(lab):
    lab.create("a.qcow2", size="64M")
    lab.write("a.qcow2", 0, "1M", pattern=0xA1)
    vm = lab.launch("a.qcow2", node_name="node-A")
    board = Dashboard(vm)
    try:
        stream, commit = board.forms["block-stream"], board.forms["block-commit"]
        for form, sentence in ((stream, "Nothing to stream"), (commit, "Nothing to commit")):
            assert sentence in form.error.value and "a.qcow2 is the only image" in form.error.value
            assert "qb-error" not in form.error.value, "a plain sentence: nothing is wrong"
            assert form.command_view.value == "" and form.preview.value == "", "no command with device null"
            sent = len(vm.history)
            form.run_button.click()
            assert form.result is None and len(vm.history) == sent and sentence in form.error.value

        board.forms["blockdev-snapshot-sync"].run_button.click()
        assert str(vm.chain()) == "[a.qcow2] <-- [b.qcow2]"
        board.tabs.selected_index = list(board.forms).index("block-commit")  # a hidden form redraws when shown
        top = "(QEMU) block-commit device=node-B top-node=node-B base-node=node-A"
        wait_for(lambda: top in unescape(commit.command_view.value), "a commit of b.qcow2 into a.qcow2")
        board.tabs.selected_index = list(board.forms).index("block-stream")
        wait_for(lambda: "(QEMU) block-stream device=node-B" in unescape(stream.command_view.value), "a stream")
        assert stream.error.value == "" and "null" not in stream.command_view.value
        stream.run_button.click()
        stream.result.wait()
        assert str(vm.chain()) == "[b.qcow2]"
        assert vm.read_matches("virtio0", 0, "1M", 0xA1)
        assert vm.verify([(0, "1M", 0xA1), ("1M", "63M", 0)], image="b.qcow2")
    finally:
        board.close()
        vm.quit()


def test_the_blockdev_variants_offer_nodes_outside_the_chain(dashboard, seed_vm, lab):
    form = dashboard.forms["drive-backup"]
    dashboard.tabs.selected_index = list(dashboard.forms).index("drive-backup")
    form.variant.value = "blockdev-backup"
    assert "needs a target node" in unescape(form.error.value)
    lab.create("e.qcow2", size="64M")
    seed_vm.blockdev_add(driver="qcow2", node_name="node-E", file={"driver": "file", "filename": "e.qcow2"})
    wait_for(lambda: "node-E" in form.fields["target-node"].options[0][1], "node-E in the target dropdown")
    form.fields["target-node"].value = "node-E"
    assert "(QEMU) blockdev-backup device=node-D target=node-E sync=full" in unescape(form.command_view.value)
    form.run_button.click()
    form.result.wait()
    assert seed_vm.verify(expected_view("ABCD"), image="e.qcow2")
    assert str(seed_vm.chain()) == SEED


def test_the_view_redraws_after_commands_typed_in_the_notebook(seed_vm):
    view = ChainView(seed_vm)
    try:
        assert '<svg style="max-width:100%;height:auto"' in view.svg, "a wide diagram shrinks to the output's width"
        seed_vm.blockdev_snapshot_sync(
            node_name="node-D", snapshot_file="e.qcow2", snapshot_node_name="node-E", format="qcow2"
        )
        wait_for(lambda: "image:node-E" in view_text(view), "the new overlay in the view")
        assert "new" in view_text(view)  # the last change stays highlighted
        job = seed_vm.block_stream(device="node-E", job_id="job0", speed=64 << 10)
        wait_for(lambda: "job:job0" in view_text(view), "the job's arrow")
        job.set_speed(0)
        job.wait()
        wait_for(lambda: str(view.chain) == "[e.qcow2]", "the streamed chain")
        assert seed_vm.verify(expected_view("ABCD"))
    finally:
        view.close()


def test_the_migration_view_wraps_and_scales_its_two_chains(seed_vm, lab):
    destination = launch_destination(lab, seed_vm)
    migration = StorageMigration(seed_vm, destination, speed="64k")
    view = MigrationView(migration)
    try:
        assert view.sides.layout.flex_flow == "row wrap", "a wide source pushes the destination below it"
        for side in view.sides.children:
            assert side.layout.min_width == "0" and side.layout.max_width == "100%"
        for chain_view in (view.source, view.destination):
            assert re.search(r'<svg style="max-width:100%;height:auto" width="[\d.]+pt"', chain_view.svg)
        migration.start_server()
        migration.export_target()
        job = migration.mirror()
        wait_for(lambda: f"target of {job.id}, " in view_text(view.source), "the NBD target labelled by its job")
        assert "not opened yet" not in view_text(view.source)
        job.set_speed(0)
        migration.run()
        assert view.mirror.children[0].job is job
    finally:
        view.close()
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2")
    assert destination.verify(expected_view("ABCD"))


def test_the_console_speaks_qmp_shell_and_shows_events(seed_vm):
    console = Console(seed_vm)
    try:
        assert console.run("query-block-jobs") == []
        assert '"return": []' in unescape(console.transcript.value)
        job = console.run("block-stream device=node-D base-node=node-B job-id=job0")
        assert isinstance(job, qb.Job)
        job.wait()
        wait_for(lambda: "JOB_STATUS_CHANGE" in console.transcript.value, "events in the transcript")
        wait_for(lambda: "BLOCK_JOB_COMPLETED" in console.transcript.value, "the completion event")
        sent = len(seed_vm.history)
        assert console.run("block-stream device=node-X job-id=job1") is None
        assert "'node-X' is not in the chain" in unescape(console.transcript.value)
        assert len(seed_vm.history) == sent
        assert console.recall.options[1] == "block-stream device=node-X job-id=job1"
        console.recall.value = "query-block-jobs"
        assert console.prompt.value == "query-block-jobs"
        assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]"
        assert seed_vm.verify(expected_view("ABCD"))
    finally:
        console.close()


def test_closed_widgets_leave_no_thread_behind(seed_vm):
    Dashboard(seed_vm).close()

    def view_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("qblocknb-view")]

    wait_for(lambda: not view_threads(), "the view threads to end")


def test_closed_views_leave_no_listener_behind(seed_vm):
    before = len(seed_vm.listeners)
    job = seed_vm.block_stream(device="node-D", job_id="job0", speed="1M")
    own = len(job.listeners)  # the machine's own (it records what the job takes out of the chain)
    board = Dashboard(seed_vm)
    wait_for(lambda: board.monitors, "a job monitor for the running job")
    assert len(seed_vm.listeners) > before and len(job.listeners) == own + 1
    board.close()
    assert len(seed_vm.listeners) == before and len(job.listeners) == own
    job.set_speed(0).wait(timeout=60)
