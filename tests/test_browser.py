"""The quickstart in a real JupyterLab, in a real headless Chromium: the diagram and the widgets render, and a click
on a widget changes the chain.

The test starts JupyterLab from this interpreter on a free loopback port with a token, on a copy of
``notebooks/``, and drives Debian's ``chromium`` with Python playwright. It runs every cell of
``00-quickstart.ipynb`` but the last (*Run ▸ Run All Above Selected Cell*), checks the chain diagrams, presses
*Run* on the dashboard's block-stream form, waits for the diagram to show the new chain, then runs the last cell
(``lab.close()``) and checks that no QEMU is left. Screenshots go to ``build/screenshots/``; on a failure the page
and the JupyterLab log are saved under ``build/`` too. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import qemu_pids_under

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
SCREENSHOTS = BUILD / "screenshots"
NOTEBOOK = "00-quickstart.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START = 60  # seconds for JupyterLab to answer
NOTEBOOK_RUN = 120  # seconds for the cells to run in the kernel
UI_WAIT = 30  # seconds for any one thing to appear on the page
STOP_WAIT = 10  # seconds for a process to end after SIGTERM
CHAIN_BEFORE = "[a.qcow2] <-- [d.qcow2]"  # what the quickstart leaves
CHAIN_AFTER = "[d.qcow2]"  # after Run on the block-stream form: everything streamed into D
# Test-only JupyterLab settings: no news prompt over the page, and every cell in the DOM (no windowing).
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(root: int) -> set[int]:
    """Every process below ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies count as ended)."""
    running = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                running.add(pid)
    return running


def wait_for(condition: Callable[[], object], seconds: float, what: str, interval: float = 0.2) -> object:
    """Poll ``condition`` until it returns something true; fail saying ``what`` did not happen in time."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds:g} s")
        time.sleep(interval)


class JupyterLab:
    """A JupyterLab server of our own, on a copy of the notebooks, logging to ``build/jupyterlab.log``."""

    def __init__(self, home: Path) -> None:
        self.root = home / "notebooks"
        self.root.mkdir()
        for notebook in (ROOT / "notebooks").glob("*.ipynb"):  # the notebooks only, not what a local run left
            shutil.copy2(notebook, self.root)
        self.scratch = home / "scratch"  # the kernel's TMPDIR: every qb.Lab() folder lands here
        self.scratch.mkdir()
        settings = home / "settings"
        for name, values in LAB_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.update(
            QBLOCKNB_ACCEL="tcg",  # as on Binder
            TMPDIR=str(self.scratch),
            JUPYTER_CONFIG_DIR=str(home / "config"),
            JUPYTER_RUNTIME_DIR=str(home / "runtime"),
            PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        )
        BUILD.mkdir(exist_ok=True)
        self.log_path = BUILD / "jupyterlab.log"
        self.log = self.log_path.open("w")
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={home / 'workspaces'}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        self.process = subprocess.Popen(
            command, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self._answers, SERVER_START, f"JupyterLab answering on {self.url} (log: {self.log_path})")

    def api(self, path: str, method: str = "GET") -> object:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"JupyterLab exited with {self.process.returncode}; see {self.log_path}")
        try:
            return bool(self.api("status"))
        except OSError:
            return False

    def page_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{urllib.parse.quote(notebook)}?token={self.token}"

    def kernels_idle(self) -> bool:
        kernels = self.api("kernels")
        return bool(kernels) and all(kernel["execution_state"] == "idle" for kernel in kernels)

    def shut_down_kernels(self) -> None:
        for session in self.api("sessions"):
            self.api(f"sessions/{session['id']}", method="DELETE")
        wait_for(lambda: not self.api("kernels"), STOP_WAIT, "every kernel shutting down")

    def stop(self) -> None:
        """End the server and everything it started (kernels, and whatever QEMU a kernel left)."""
        below = descendants(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_WAIT)
        for pid in alive(below):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.log.close()


@pytest.fixture
def jupyterlab(tmp_path: Path) -> Iterator[JupyterLab]:
    server = JupyterLab(tmp_path)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def browser_page(tmp_path: Path):
    """A Chromium page with a fresh profile; fails (never skips) when Chromium or playwright is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs Python playwright: pip install -e '.[test]' (make test does it)")
    if not CHROMIUM.exists():
        pytest.fail(f"the browser test needs Debian's chromium at {CHROMIUM}: apt-get install chromium (make test)")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1600, "height": 2000},  # tall enough for the whole dashboard
        )
        context.set_default_timeout(UI_WAIT * 1000)
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def shot(page, name: str, element=None) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    (element or page).screenshot(path=str(path))
    return path


def code_cells(page):
    return page.locator(".jp-Notebook .jp-CodeCell")


def ran(page, cells: slice) -> bool:
    """True once the code cells in ``cells`` show an execution count (``[7]:``); fails at once on a cell error."""
    no_errors(page)
    prompts = code_cells(page).locator(".jp-InputPrompt").all_inner_texts()
    return all(prompt.strip()[1:-2].strip().isdigit() for prompt in prompts[cells])


def select_cell(page, cell) -> None:
    """Select a cell in command mode by clicking its prompt, as a person would."""
    cell.scroll_into_view_if_needed()
    cell.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")


def run_menu(page, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def diagram_text(page) -> str:
    """What the dashboard's diagram says (graphviz writes '-' as '&#45;'; the page's text has the '-')."""
    return page.locator(".qb-dashboard .qb-chain-view .qb-diagram svg").first.text_content() or ""


def caption(page) -> str:
    return page.locator(".qb-dashboard .qb-chain-view code").first.inner_text().strip()


def plot_drawn(monitor) -> bool:
    """True once the monitor's plot image has loaded (it is drawn on the monitor's own thread)."""
    return monitor.locator("img").first.evaluate("image => image.complete && image.naturalWidth > 0")


def no_errors(page) -> None:
    """Fail with the traceback when a cell raised (JupyterLab shows an error as stderr text)."""
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [text for text in errors.all_inner_texts() if "Traceback" in text or "Error" in text]
    if texts:
        pytest.fail("a cell of the notebook failed:\n" + "\n".join(texts))


def test_quickstart_dashboard_in_jupyterlab(jupyterlab: JupyterLab, browser_page):
    page = browser_page
    started = time.monotonic()
    kernel_pids: set[int] = set()
    try:
        page.goto(jupyterlab.page_url(NOTEBOOK))
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell").first.wait_for()
        wait_for(jupyterlab.kernels_idle, UI_WAIT, "the notebook's kernel starting")
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()  # fold the file browser
        count = code_cells(page).count()
        assert count > 3, f"{NOTEBOOK} shows only {count} code cells"

        # Run everything but the last cell, which ends the QEMU.
        select_cell(page, code_cells(page).last)
        run_menu(page, "Run All Above Selected Cell")
        wait_for(
            lambda: ran(page, slice(None, -1)) and jupyterlab.kernels_idle(),
            NOTEBOOK_RUN,
            "every cell above the last one running",
        )
        kernel_pids = descendants(jupyterlab.process.pid)

        # The first chain output is graphviz SVG (JupyterLab shows it as an image of the SVG source).
        image = page.locator(".jp-OutputArea-output[data-mime-type='image/svg+xml'] img").first
        source = urllib.parse.unquote(image.get_attribute("src") or "")
        assert source.startswith("data:image/svg+xml"), source[:80]
        for text in ("a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2", "node&#45;D", "active layer · virtio0"):
            assert text in source, f"the chain diagram does not show {text!r}"

        # The dashboard: live diagram, caption, job monitor, forms as tabs.
        dashboard = page.locator(".qb-dashboard").first
        dashboard.scroll_into_view_if_needed()
        wait_for(lambda: caption(page) == CHAIN_BEFORE, UI_WAIT, f"the dashboard showing {CHAIN_BEFORE}")
        before = diagram_text(page)
        for text in ("a.qcow2", "d.qcow2", "node-A · qcow2", "node-D · qcow2", "active layer · virtio0"):
            assert text in before, f"the dashboard's diagram does not show {text!r}: {before!r}"
        assert "node-A · left by stream" not in before
        monitor = dashboard.locator(".qb-job-monitor").first
        assert "completed" in monitor.inner_text(), monitor.inner_text()
        wait_for(lambda: plot_drawn(monitor), UI_WAIT, "the job monitor's progress plot appearing")
        selected = dashboard.locator(".lm-TabBar-tab.lm-mod-current").first.inner_text()
        assert selected.strip() == "block-stream", selected
        form = dashboard.locator(".qb-form:visible").first
        assert '"execute": "block-stream"' in form.inner_text()
        shot(page, "dashboard", dashboard)

        # A click on Run: stream everything into D; the diagram redraws by itself.
        form.get_by_role("button", name="Run").click()
        wait_for(lambda: caption(page) == CHAIN_AFTER, UI_WAIT, f"the dashboard redrawing as {CHAIN_AFTER}")
        wait_for(lambda: "node-A · left by stream" in diagram_text(page), UI_WAIT, "A shown as retired")
        after = diagram_text(page)
        assert "node-D · qcow2" in after and "active layer · virtio0" in after, after
        assert "node-A · qcow2" not in after, after
        assert "block-stream sent: started job" in form.inner_text()
        shot(page, "dashboard-after-stream", dashboard)

        # The console tab: a qmp-shell line typed and sent, QEMU's reply and the job's events in the transcript.
        dashboard.locator(".lm-TabBar-tab", has_text="console").first.click()
        console = dashboard.locator(".qb-console").first
        console.locator("input[type='text']").first.fill("query-block-jobs")
        console.get_by_role("button", name="Send").click()
        wait_for(lambda: '"return": []' in console.inner_text(), UI_WAIT, "the console showing QEMU's reply")
        transcript = console.inner_text()
        assert "(QEMU) query-block-jobs" in transcript, transcript
        assert "JOB_STATUS_CHANGE" in transcript, "the events of the stream are in the console"
        shot(page, "console", console)
        shot(page, "quickstart-page")

        # The last cell ends the QEMU; then the kernel goes too.
        assert qemu_pids_under(jupyterlab.scratch), "the quickstart's QEMU is not running before lab.close()"
        select_cell(page, code_cells(page).last)
        page.keyboard.press("Control+Enter")  # run it, stay on it
        wait_for(
            lambda: ran(page, slice(-1, None)) and jupyterlab.kernels_idle(),
            UI_WAIT,
            "the last cell (lab.close()) running",
        )
        assert not qemu_pids_under(jupyterlab.scratch), "QEMU still runs after lab.close()"
        jupyterlab.shut_down_kernels()
        wait_for(lambda: not alive(kernel_pids), STOP_WAIT, "the kernel process ending")
    except BaseException:
        with contextlib.suppress(Exception):
            shot(page, "failure")
        print(f"screenshot: {SCREENSHOTS / 'failure.png'}; JupyterLab log: {jupyterlab.log_path}")
        raise
    finally:
        print(f"browser test took {time.monotonic() - started:.1f} s")
    assert not qemu_pids_under(jupyterlab.scratch)
