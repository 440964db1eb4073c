"""Running QEMU's offline tools (``qemu-img``, ``qemu-io``) with errors that read as sentences.

Every call reads images with ``-U`` (force-share) where it only looks, so an
image that a live QEMU holds open can still be inspected; see
``qblocknb.live.guestio`` for why a flush must come first.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from qblocknb.errors import ToolError

TOOL_TIMEOUT = 120
PACKAGES = (
    ("qemu-system", "qemu-system-x86"),
    ("qemu-storage-daemon", "qemu-system-common"),
    ("qemu-", "qemu-utils"),
    ("openssl", "openssl"),
    ("dot", "graphviz"),
)


def require(tool: str) -> str:
    """Return the path of a tool, or explain which package brings it."""
    path = shutil.which(tool)
    if path is None:
        package = next((p for prefix, p in PACKAGES if tool.startswith(prefix)), tool)
        raise ToolError(
            f"'{tool}' was not found on PATH",
            f"qblocknb runs it for this step; Debian and Ubuntu ship it in '{package}'",
            f"install it with: sudo apt-get install {package}",
        )
    return path


def run_status(tool: str, *args: str, what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a tool and return its whole outcome, for callers that read meaning into exit codes."""
    command = [require(tool), *args]
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ToolError(
            f"{what} did not finish",
            f"{tool} ran longer than {TOOL_TIMEOUT} s",
            "check that the image is not on a stalled file system",
        ) from None


def run(tool: str, *args: str, what: str, cwd: Path | None = None) -> str:
    """Run a tool and return its stdout; a failure becomes a ToolError naming ``what``."""
    done = run_status(tool, *args, what=what, cwd=cwd)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise ToolError(
            f"{what} failed",
            message[-1] if message else f"{tool} exited with {done.returncode}",
            "check the file name and format",
        )
    return done.stdout
