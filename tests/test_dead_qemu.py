"""A QEMU that dies, loses its QMP socket or hangs in the middle of a throttled job.

Every waiting call (job waits, QMP calls, the chain, job verbs) must come back within its own timeout with a
sentence: ``QEMUGone`` for a dead QEMU or a closed socket, ``Timeout`` for a stopped one, each saying what to
do.  Calls already waiting when it happens come back too.  ``lab.close()`` then leaves no QEMU and no thread,
and every image of the chain and the target passes ``qemu-img check``.  The socket is closed at our end
(the mirror) or at QEMU's (the commit), after which ``qb.connect`` reaches the same QEMU again.

Each call runs in a thread of its own, all at once, and the test waits for each no longer than its timeout
plus a margin: a hang fails the test instead of hanging it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from conftest import qemu_pids_under

import qblocknb as qb
from qblocknb.teaching.seedchain import build_seed_chain
from qblocknb.widgets import ChainView, Dashboard, JobMonitor

LIBC = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_GETFD = 438  # the same number on every architecture (Linux 5.6+)
SHORT = 0.5  # the timeout given to every call made once QEMU is gone or stopped
LONG = 60.0  # the timeout of calls already waiting when QEMU dies: they must end long before it
MARGIN = 5.0  # how much longer than its timeout a call may take to come back (a loaded 2-core machine)
SLOW = 64 << 10  # bytes/s: the seed's 3-4 MiB take about a minute, so the job is still running throughout
MODES = ("killed", "socket-closed", "stopped")
WORDS = {
    "killed": (qb.QEMUGone, ["no longer running", "killed by signal 9", "launch a new one"]),
    "socket-closed": (qb.QEMUGone, ["QMP connection", "closed", "reconnect with qb.connect("]),  # either end
    "stopped": (qb.Timeout, ["got no answer within 0.5 s", "QEMU is alive but did not answer", "SIGCONT"]),
}


@dataclass
class Call:
    """One call run on its own thread, and what came of it."""

    name: str
    function: Callable[[], object]
    timeout: float
    error: BaseException | None = None
    returned: bool = False
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"call {self.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.function()
        except BaseException as error:  # what the test looks at
            self.error = error
        else:
            self.returned = True

    def outcome(self) -> BaseException:
        """The error the call raised, waiting no longer than its timeout and the margin."""
        self.thread.join(self.timeout + MARGIN)
        assert not self.thread.is_alive(), f"{self.name} was still waiting {self.timeout + MARGIN} s later"
        assert not self.returned, f"{self.name} returned as if QEMU had answered"
        return self.error


def start_job(vm: qb.Machine, kind: str) -> qb.Job:
    """A throttled mirror to a new image, or a throttled active commit on its way to READY; running."""
    if kind == "mirror":
        job = vm.drive_mirror(device="node-D", target="e.qcow2", sync="full", format="qcow2", speed=SLOW)
    else:
        job = vm.block_commit(device="node-D", speed=SLOW)
    deadline = time.monotonic() + 30
    while job.status != "running":
        assert time.monotonic() < deadline, f"the job stayed {job.status}"
        time.sleep(0.01)
    return job


def close_qmp_socket(vm: qb.Machine, side: str = "ours") -> None:
    """Shut the QMP connection down under the session: at our end of the socket, or at QEMU's.

    QEMU's end is taken from the process itself (``pidfd_getfd``): the connected socket bound to the QMP path.
    Either way both sides see the connection end, and QEMU keeps running with its monitor free for a new one.
    """
    if side == "ours":
        end = vm.session._client._writer.transport.get_extra_info("socket")  # the socket qemu.qmp reads
    else:
        end = qemu_end_of(vm.pid, str(vm.session.socket_path))
    end.shutdown(socket.SHUT_RDWR)


def qemu_end_of(pid: int, path: str) -> socket.socket:
    """QEMU's end of the QMP connection on ``path``, duplicated into this process."""
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
            fd = LIBC.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            assert fd >= 0, f"pidfd_getfd: {os.strerror(ctypes.get_errno())}"
            end = socket.socket(fileno=fd)
            listening = end.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if end.family == socket.AF_UNIX and end.getsockname() == path and not listening:
                return end
            end.close()
    finally:
        os.close(pidfd)
    raise AssertionError(f"QEMU {pid} has no connection on {path}")


PROCESS_WIDE = {"qblocknb-libvirt-events"}  # libvirt's event loop: registered once per process, never ended


def qblocknb_threads() -> list[str]:
    """Threads of the toolkit still alive, waiting a little for those that end by themselves (libvirt's event
    loop aside: once a process has spoken to libvirt, libvirt keeps it for the life of the process)."""
    deadline = time.monotonic() + 5
    while True:
        names = [t.name for t in threading.enumerate() if t.name.startswith("qblocknb") and t.name not in PROCESS_WIDE]
        if not names or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def assert_sentence(error: BaseException, kind: type, words: list[str], name: str) -> None:
    assert isinstance(error, kind), f"{name}: {type(error).__name__}: {error}"
    text = str(error)
    assert text.endswith(".") and "\n" not in text and "Traceback" not in text, f"{name}: {text}"
    for word in words:
        assert word in text, f"{name}: {word!r} not in {text!r}"


def images_check(lab: qb.Lab, names: list[str]) -> None:
    for name in names:
        report = lab.check(name)  # raises ToolError on corruption or leaks
        assert report.get("corruptions", 0) == 0 and report.get("leaks", 0) == 0, (name, report)


@pytest.fixture
def dead_lab(tmp_path):
    """A lab whose QEMUs may be stopped: they are continued at the end whatever happened, then ended."""
    lab = qb.Lab(tmp_path / "lab")
    yield lab
    for machine in lab.machines:
        if machine.process is not None and machine.process.alive():
            os.kill(machine.pid, signal.SIGCONT)
    lab.close()


@pytest.mark.parametrize("kind", ["mirror", "active-commit"])
@pytest.mark.parametrize("mode", MODES)
def test_every_waiting_call_returns_with_a_sentence(dead_lab, mode, kind):
    lab = dead_lab
    vm = build_seed_chain(lab)
    job = start_job(vm, kind)
    images = ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"] + (["e.qcow2"] if kind == "mirror" else [])
    error, words = WORDS[mode]
    waiting_for = SHORT if mode == "stopped" else LONG

    os.kill(vm.pid, signal.SIGSTOP)  # so that the calls started now really wait for QEMU
    waiting = [Call("a waiting query-block-jobs", lambda: vm.query_block_jobs(timeout=waiting_for), waiting_for)]
    if mode == "killed":  # without a timeout it waits while QEMU lives: no longer
        waiting.append(Call("a waiting job.wait() without a timeout", job.wait, LONG))
    waiting += [
        Call("a waiting job.wait()", lambda: job.wait(timeout=waiting_for), waiting_for),
        Call("a waiting job.wait_ready()", lambda: job.wait_ready(timeout=waiting_for), waiting_for),
    ]
    time.sleep(0.2)  # let them reach QEMU's socket
    if mode == "killed":
        os.kill(vm.pid, signal.SIGKILL)
    elif mode == "socket-closed":
        close_qmp_socket(vm, "ours" if kind == "mirror" else "qemu's")
        os.kill(vm.pid, signal.SIGCONT)

    vm.session.timeout = SHORT  # the bound of calls that take no timeout of their own
    calls = [
        Call("vm.execute('query-jobs')", lambda: vm.execute("query-jobs", timeout=SHORT), SHORT),
        Call("vm.query_block_jobs()", lambda: vm.query_block_jobs(timeout=SHORT), SHORT),
        Call("vm.chain()", vm.chain, SHORT),  # query-block and query-named-block-nodes, asked together
        Call("job.cancel()", job.cancel, SHORT),
        Call("job.set_speed()", lambda: job.set_speed(0), SHORT),
    ]
    calls += [
        Call("job.wait()", lambda: job.wait(timeout=SHORT), SHORT),
        Call("job.wait_ready()", lambda: job.wait_ready(timeout=SHORT), SHORT),
    ]
    for call in waiting + calls:
        if mode == "stopped" and call.name.startswith(("job.wait", "a waiting job")):
            assert_sentence(call.outcome(), qb.Timeout, [f"within {SHORT} s"], call.name)
        else:
            assert_sentence(call.outcome(), error, words, call.name)
    if mode != "killed":
        assert vm.process.alive(), "nothing above ended QEMU"
    if mode == "socket-closed":  # what the sentence says to do works: QEMU's monitor takes a new connection
        again = qb.connect(vm.session.socket_path)
        assert str(again.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
        assert [entry["device"] for entry in again.query_block_jobs()] == [job.id], "the job ran on meanwhile"
        again.session.close()

    lab.close()  # a stopped QEMU too: SIGKILL works on a stopped process
    assert not vm.process.alive()
    assert qemu_pids_under(lab.path) == []
    assert qblocknb_threads() == [], "the QMP loop and the job sampler end with their QEMU"
    images_check(lab, images)
    assert str(lab.chain("d.qcow2")) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "no pivot happened"


def test_job_waits_on_a_closed_socket(dead_lab):
    vm = build_seed_chain(dead_lab)
    job = start_job(vm, "mirror")
    waiting = Call("a waiting job.wait()", lambda: job.wait(timeout=1), 1)  # would wait forever without one
    close_qmp_socket(vm)
    later = Call("job.wait_ready()", lambda: job.wait_ready(timeout=1), 1)
    for call in (waiting, later):
        assert_sentence(call.outcome(), *WORDS["socket-closed"], call.name)


@pytest.mark.parametrize("mode", MODES)
def test_the_dashboard_shows_the_vm_gone(dead_lab, mode):
    vm = build_seed_chain(dead_lab)
    job = start_job(vm, "mirror")
    board = Dashboard(vm)
    try:
        wait_for(lambda: job in board.monitors, "a monitor for the mirror")
        monitor = board.monitors[job]
        assert board.state.value == "" and not board.console.send_button.disabled
        assert not any(form.run_button.disabled for form in board.forms.values())
        wait_for(lambda: not monitor.buttons["cancel"].disabled, "Cancel enabled while the job runs")

        if mode == "killed":
            os.kill(vm.pid, signal.SIGKILL)
        elif mode == "socket-closed":
            close_qmp_socket(vm)
        else:
            os.kill(vm.pid, signal.SIGSTOP)
        said = {"killed": "no longer running", "socket-closed": "closed", "stopped": "is stopped"}[mode]
        wait_for(lambda: said in board.state.value, f"the dashboard to say QEMU {said}")
        assert "qb-error" in board.state.value
        assert all(button.disabled for button in monitor.buttons.values()) and monitor.speed.disabled
        assert all(form.run_button.disabled for form in board.forms.values())
        assert board.console.send_button.disabled and board.console.prompt.disabled
        assert said in board.forms["block-stream"].message.value and said in board.console.transcript.value
        if mode == "stopped":  # it comes back: so do the buttons
            os.kill(vm.pid, signal.SIGCONT)
            wait_for(lambda: board.state.value == "", "the dashboard to see QEMU continue")
            assert not board.console.send_button.disabled and not monitor.buttons["cancel"].disabled
            assert not any(form.run_button.disabled for form in board.forms.values())
            job.set_speed(0).wait_ready(timeout=60).cancel().wait(timeout=60)
        else:
            wait_for(lambda: "qblocknb-dashboard" not in qblocknb_thread_names(), "the dashboard's thread to end")
    finally:
        board.close()
    dead_lab.close()
    assert qblocknb_threads() == []
    images_check(dead_lab, ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "e.qcow2"])
    if mode == "stopped":
        assert dead_lab.compare("e.qcow2", "d.qcow2"), "the mirror, cancelled after READY, is a full copy"


def qblocknb_thread_names() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("qblocknb") and t.name not in PROCESS_WIDE]


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll until ``condition()`` holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_views_left_open_end_their_threads_once_qemu_is_gone(dead_lab):
    vm = build_seed_chain(dead_lab)
    job = start_job(vm, "mirror")
    view, monitor = ChainView(vm), JobMonitor(job, plot_interval=0.2)
    close_qmp_socket(vm)
    assert qblocknb_threads() == [], "nobody closed the views, but their QEMU is gone"
    assert "closed" in view.status.value, "the chain view's last drawing says why it stopped"
    monitor.update()
    assert all(button.disabled for button in monitor.buttons.values()) and monitor.speed.disabled
    monitor.close()
    view.close()
