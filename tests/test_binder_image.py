"""The Binder image (``binder/Dockerfile``, built by ``make binder-image``) started as Binder starts it.

One container for the module, from the image built beforehand (``qblocknb-binder``, or
``$QBLOCKNB_BINDER_IMAGE``): as UID 1000, without ``/dev/kvm``, memory capped at 2 GiB, JupyterLab on a token and
its port published on 127.0.0.1 only. In it, every notebook runs top to bottom (nbclient in the container, no
``QBLOCKNB_ACCEL``: the toolkit itself must find that KVM is out of reach); 08 boots its guest under TCG, 10 stops
at its first cell with the sentence saying libvirt is missing. From the host, Debian's Chromium (playwright,
``tests/test_browser.py``'s helpers) opens the quickstart in that JupyterLab, runs it, sees the chain diagram and
the dashboard, clicks Run on the stream form and sees the diagram change. The container's peak memory (its
cgroup's, page cache included, and the peak of its processes' own memory, sampled) and the image's size are
printed and written to ``build/binder-image.json`` (``docs/benchmarks.md`` quotes them).

Marked ``binder_image`` and left out of ``make test``; ``make test-binder-image`` builds the image and runs this.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_browser import (
    CHAIN_AFTER,
    CHAIN_BEFORE,
    LAB_SETTINGS,
    NOTEBOOK,
    NOTEBOOK_RUN,
    SERVER_START,
    STOP_WAIT,
    UI_WAIT,
    JupyterLab,
    browser_page,  # noqa: F401 (a fixture, used by name)
    caption,
    code_cells,
    diagram_text,
    free_port,
    plot_drawn,
    ran,
    run_menu,
    select_cell,
    shot,
    wait_for,
)

pytestmark = pytest.mark.binder_image

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
IMAGE = os.environ.get("QBLOCKNB_BINDER_IMAGE", "qblocknb-binder")
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
HOME = "/home/jovyan"  # the image's NB_USER home, where the repository is
UID = 1000
MEMORY_CAP = 2 << 30
CELL_TIMEOUT = 300  # TCG in a container on a shared 2-core machine
SAMPLE_EVERY = 0.2  # seconds between samples of the container's memory

# Run in the container by the image's own Python: one notebook, top to bottom, reported as JSON.
RUNNER = r"""
import json, os, sys, tempfile
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

path, timeout = Path(sys.argv[1]), int(sys.argv[2])
notebook = nbformat.read(path, as_version=4)
scratch = tempfile.mkdtemp(prefix="qbnb-")
env = {k: v for k, v in os.environ.items() if k != "QBLOCKNB_ACCEL"}
env["TMPDIR"] = scratch
resources = {"metadata": {"path": str(path.parent)}}
client = NotebookClient(notebook, kernel_name="python3", timeout=timeout, resources=resources)
error = None
try:
    client.execute(env=env)
except CellExecutionError as failure:
    error = str(failure)[-6000:]
left = []
for entry in Path("/proc").iterdir():
    if entry.name.isdigit():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "qemu-system" in cmdline and scratch in cmdline:
            left.append(int(entry.name))
streams = [
    "".join(output.get("text", "") for output in cell.get("outputs", []) if output.output_type == "stream")
    for cell in notebook.cells if cell.cell_type == "code"
]
print(json.dumps({"error": error, "streams": streams, "qemu_left": left}))
"""


# Run in the container: every process's command line, one a line.
LIST_COMMAND_LINES = r"""
import pathlib
for path in pathlib.Path("/proc").glob("[0-9]*/cmdline"):
    try:
        print(path.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    except OSError:
        pass
"""


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


class CgroupMemory(threading.Thread):
    """The container's memory, read from its cgroup on the host (v1 or v2): the cgroup's own peak (page cache
    included) at the end, and the peak of its processes' anonymous memory, sampled meanwhile."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in lines if line.split(":")[1] == "memory"]
        self.v2 = not v1
        self.dir = Path("/sys/fs/cgroup/memory" + v1[0]) if v1 else Path("/sys/fs/cgroup" + lines[0].split(":", 2)[2])
        self.anon_peak = 0
        self._stop_event = threading.Event()

    def _read(self, v1: str, v2: str) -> int:
        return int((self.dir / (v2 if self.v2 else v1)).read_text().split()[0].replace("max", str(1 << 62)))

    def limit(self) -> int:
        return self._read("memory.limit_in_bytes", "memory.max")

    def peak(self) -> int:
        return self._read("memory.max_usage_in_bytes", "memory.peak")

    def anon(self) -> int:
        stat = dict(line.split() for line in (self.dir / "memory.stat").read_text().splitlines())
        return int(stat["anon"] if self.v2 else stat["total_rss"])

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, KeyError, ValueError):
                self.anon_peak = max(self.anon_peak, self.anon())
            self._stop_event.wait(SAMPLE_EVERY)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


class Container(JupyterLab):
    """The image running as on Binder, with JupyterLab answering on 127.0.0.1:port; the REST helpers (``api``,
    ``kernels_idle``) are tests/test_browser.py's, on this server instead of one started from this interpreter."""

    def __init__(self) -> None:
        if shutil.which("podman") is None:
            pytest.fail("the Binder image test needs podman: make test-binder-image installs it and builds the image")
        if podman("image", "exists", IMAGE, check=False).returncode != 0:
            pytest.fail(f"no image {IMAGE}: build it with make binder-image (make test-binder-image does both)")
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"qblocknb-binder-test-{secrets.token_hex(4)}"
        settings = f"{HOME}/.qblocknb-test/settings"
        start = (
            "import json, os, pathlib, sys\n"
            "for name, values in json.loads(os.environ['LAB_SETTINGS']).items():\n"
            f"    path = pathlib.Path('{settings}', name)\n"
            "    path.parent.mkdir(parents=True, exist_ok=True)\n"
            "    path.write_text(json.dumps(values))\n"
            "os.execvp('jupyter', ['jupyter', *sys.argv[1:]])\n"
        )
        lab = [
            "lab",
            "--no-browser",
            "--ip=0.0.0.0",
            "--port=8888",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={HOME}",
            f"--LabApp.user_settings_dir={settings}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        base = ["run", "--detach", "--name", self.name, "--user", str(UID), "--env", "LAB_SETTINGS"]
        base += ["--publish", f"127.0.0.1:{self.port}:8888"]
        command = [IMAGE, "python3", "-c", start, *lab]
        os.environ["LAB_SETTINGS"] = json.dumps(LAB_SETTINGS)
        started = subprocess.run(
            ["podman", *base, "--memory", str(MEMORY_CAP), "--memory-swap", str(MEMORY_CAP), *command],
            capture_output=True,
            text=True,
        )
        self.capped = started.returncode == 0
        if not self.capped:  # this machine refuses a memory cap: run without one, and check the measured peak
            print(f"no memory cap here ({started.stderr.strip()}); the peak is measured and checked instead")
            podman("rm", "--force", self.name, check=False)
            podman(*base, *command)
        self.memory = CgroupMemory(int(podman("inspect", "--format", "{{.State.Pid}}", self.name).stdout))
        self.memory.start()
        wait_for(self._answers, SERVER_START, f"JupyterLab answering in the container on {self.url}")

    def exec(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *args, timeout=timeout, check=False)

    def _answers(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Status}}", self.name, check=False).stdout.strip()
        if state not in ("running", "created"):
            pytest.fail(f"the container is {state or 'gone'}: {podman('logs', self.name, check=False).stderr[-3000:]}")
        try:
            return bool(self.api("status"))
        except OSError:
            return False

    def page_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/notebooks/{urllib.parse.quote(notebook)}?token={self.token}"

    def kernels_idle(self) -> bool:
        """JupyterLab's check, but a 500 from /api/kernels while a kernel starts means "not yet" (seen once, on a
        busy machine, right after the kernel's start): a lasting one still fails the bounded wait around it."""
        try:
            return super().kernels_idle()
        except urllib.error.HTTPError as error:
            if error.code != 500:
                raise
            return False

    def qemu_running(self) -> list[str]:
        """Command lines of the QEMUs running in the container."""
        listing = self.exec("python3", "-c", LIST_COMMAND_LINES)
        return [line for line in listing.stdout.splitlines() if "qemu-system" in line]

    def oom_killed(self) -> bool:
        return podman("inspect", "--format", "{{.State.OOMKilled}}", self.name).stdout.strip() == "true"

    def stop(self) -> None:
        """Remove the container, its JupyterLab log kept in build/binder-jupyterlab.log."""
        self.memory.stop()
        BUILD.mkdir(exist_ok=True)
        logs = podman("logs", self.name, check=False)
        (BUILD / "binder-jupyterlab.log").write_text(logs.stdout + logs.stderr)
        podman("rm", "--force", "--time", str(STOP_WAIT), self.name, check=False, timeout=STOP_WAIT + 30)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    box = Container()
    try:
        yield box
    finally:
        box.stop()


def test_runs_as_binder_runs_it(container: Container):
    """UID 1000 with a writable home holding the repository, no /dev/kvm, Debian's QEMU 7.2, a readable kernel."""
    assert container.exec("id", "-u").stdout.strip() == str(UID)
    probe = container.exec(
        "bash", "-c", 'test -w "$HOME" && test -f "$HOME/pyproject.toml" && test -d "$HOME/notebooks" && echo home'
    )
    assert probe.stdout.strip() == "home", probe.stderr
    assert container.exec("test", "-e", "/dev/kvm").returncode != 0, "/dev/kvm is in the container"
    assert "version 7.2" in container.exec("qemu-system-x86_64", "--version").stdout
    kernels = container.exec("bash", "-c", 'for k in /boot/vmlinuz-*; do test -r "$k" && echo "$k"; done').stdout
    assert kernels.strip(), "no kernel in /boot readable by UID 1000 (notebook 08's guest needs one)"
    for tool in ("jupyter-lab", "jupyter-notebook", "dot", "qemu-img"):
        assert container.exec("bash", "-c", f"command -v {tool}").returncode == 0, f"{tool} is not on PATH"
    if container.capped:
        assert container.memory.limit() == MEMORY_CAP


def test_image_holds_nothing_of_the_build_host():
    """The build's host network and CA mount leave no trace: no proxy or CA setting in the image's config, and its
    /etc/ssl/certs is the image's own ca-certificates, without the host's local CAs."""
    config = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Config"]
    env = " ".join(config.get("Env", []))
    for word in ("PROXY", "PIP_CERT", "SSL_CERT", "REQUESTS_CA"):
        assert word not in env.upper(), f"the image's environment names {word}: {env}"
    probe = 'test -z "$(ls -A /mnt)" && echo "/mnt empty"; dpkg-query -W -f "\\${Status}" ca-certificates'
    listing = podman("run", "--rm", "--network", "none", IMAGE, "bash", "-c", probe).stdout
    assert listing.startswith("/mnt empty"), f"the build's CA mount left something in /mnt: {listing}"
    assert listing.endswith("install ok installed"), listing
    bundle = podman("run", "--rm", "--network", "none", IMAGE, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    assert "BEGIN CERTIFICATE" in bundle
    for local in Path("/usr/local/share/ca-certificates").glob("**/*.crt"):
        body = "".join(line for line in local.read_text().splitlines() if "CERTIFICATE" not in line)
        assert body not in bundle.replace("\n", ""), f"the host's {local.name} is in the image's CA bundle"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_the_image(container: Container, path: Path):
    started = time.monotonic()
    done = container.exec(
        "python3", "-c", RUNNER, f"{HOME}/notebooks/{path.name}", str(CELL_TIMEOUT), timeout=CELL_TIMEOUT * 4
    )
    print(f"{path.name}: {time.monotonic() - started:.0f} s in the container")
    assert done.returncode == 0, f"the runner failed: {done.stderr[-3000:]}"
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["error"] is None, f"{path.name} failed in the Binder image:\n{report['error']}"
    assert not report["qemu_left"], f"{path.name} left QEMU running: pids {report['qemu_left']}"
    streams = report["streams"]
    if path.stem.startswith("08-"):
        booted = next((text for text in streams if "the guest booted in" in text), "")
        assert "under TCG" in booted, f"notebook 08's guest did not boot under TCG: {streams[:3]}"
    if path.stem.startswith("10-"):
        first = next(text for text in streams if text.strip())
        assert "needs libvirt-python and a libvirtd" in first and "Binder has neither" in first, first
    assert not container.oom_killed()


def test_quickstart_in_a_browser(container: Container, browser_page):  # noqa: F811 (the imported fixture)
    """tests/test_browser.py's check, against the JupyterLab inside the image."""
    page = browser_page
    try:
        page.goto(container.page_url(NOTEBOOK))
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for()
        wait_for(container.kernels_idle, UI_WAIT, "the notebook's kernel starting")
        assert code_cells(page).count() > 3

        select_cell(page, code_cells(page).last)
        run_menu(page, "Run All Above Selected Cell")
        wait_for(
            lambda: ran(page, slice(None, -1)) and container.kernels_idle(),
            NOTEBOOK_RUN * 2,  # TCG in a container
            "every cell above the last one running",
        )
        image = page.locator(".jp-OutputArea-output[data-mime-type='image/svg+xml'] img").first
        source = urllib.parse.unquote(image.get_attribute("src") or "")
        for text in ("a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "node&#45;D", "active layer · virtio0"):
            assert text in source, f"the chain diagram does not show {text!r}"

        dashboard = page.locator(".qb-dashboard").first
        dashboard.scroll_into_view_if_needed()
        wait_for(lambda: caption(page) == CHAIN_BEFORE, UI_WAIT, f"the dashboard showing {CHAIN_BEFORE}")
        before = diagram_text(page)
        assert "node-A · qcow2" in before and "node-D · qcow2" in before, before
        monitor = dashboard.locator(".qb-job-monitor").first
        assert "completed" in monitor.inner_text(), monitor.inner_text()
        wait_for(lambda: plot_drawn(monitor), UI_WAIT, "the job monitor's progress plot appearing")
        form = dashboard.locator(".qb-form:visible").first
        assert '"execute": "block-stream"' in form.inner_text()
        shot(page, "binder-dashboard", dashboard)

        form.get_by_role("button", name="Run").click()
        wait_for(lambda: caption(page) == CHAIN_AFTER, UI_WAIT, f"the dashboard redrawing as {CHAIN_AFTER}")
        wait_for(lambda: "node-A · left by stream" in diagram_text(page), UI_WAIT, "A shown as retired")
        after = diagram_text(page)
        assert "node-D · qcow2" in after and "node-A · qcow2" not in after, after
        assert "block-stream sent: started job" in form.inner_text()
        shot(page, "binder-dashboard-after-stream", dashboard)

        assert container.qemu_running(), "the quickstart's QEMU is not running before lab.close()"
        select_cell(page, code_cells(page).last)
        page.keyboard.press("Control+Enter")
        wait_for(lambda: ran(page, slice(-1, None)) and container.kernels_idle(), UI_WAIT, "the last cell running")
        wait_for(lambda: not container.qemu_running(), STOP_WAIT, "QEMU ending after lab.close()")
    except BaseException:
        with contextlib.suppress(Exception):
            shot(page, "binder-failure")
        raise


def test_footprint(container: Container):
    """Last in the module: the container's peak memory over everything above, and the image's size."""
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    peak, anon = container.memory.peak(), container.memory.anon_peak
    report = {
        "image": IMAGE,
        "image_bytes": size,
        "memory_cap_bytes": MEMORY_CAP if container.capped else None,
        "cgroup_peak_bytes": peak,
        "anon_peak_bytes": anon,
        "oom_killed": container.oom_killed(),
    }
    BUILD.mkdir(exist_ok=True)
    (BUILD / "binder-image.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"image {size / 1e9:.2f} GB; container peak {peak / 2**20:.0f} MiB (cgroup, page cache included), "
        f"{anon / 2**20:.0f} MiB of its processes' own memory (sampled), cap "
        f"{'2 GiB' if container.capped else 'none'}"
    )
    assert anon > 0, "the sampler saw no memory in the container"
    assert not report["oom_killed"], "the container was killed for memory"
    assert anon < MEMORY_CAP and (container.capped or peak < MEMORY_CAP)
