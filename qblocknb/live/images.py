"""Offline image work: create, write, read back, inspect, compare, check.

These are thin, typed wrappers over ``qemu-img`` and ``qemu-io``; the Lab
uses them with paths inside its folder, and tests use them to check data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qblocknb.errors import ToolError
from qblocknb.live.tools import run, run_status
from qblocknb.model.chain import Chain
from qblocknb.model.sizes import parse_size


@dataclass(frozen=True)
class Comparison:
    """The verdict of ``qemu-img compare``: identical or not, and QEMU's own words."""

    identical: bool
    message: str

    def __bool__(self) -> bool:
        return self.identical


def create(
    path: Path,
    size: int | str | None = None,
    backing: Path | None = None,
    fmt: str = "qcow2",
    backing_fmt: str | None = None,
) -> Path:
    """Create an image; an overlay takes its size from its backing file when no size is given."""
    args = ["create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", str(backing), "-F", backing_fmt or detect_format(backing)]
    args.append(str(path))
    if size is not None:
        args.append(str(parse_size(size)))
    run("qemu-img", *args, what=f"creating {path.name}")
    return path


def detect_format(path: Path) -> str:
    """The format ``qemu-img info`` sees in an image."""
    return info_chain(path)[0]["format"]


Run = tuple[int | str, int | str, int]  # (offset, length, pattern)


def io_command(verb: str, offset: int | str, length: int | str, pattern: int) -> str:
    """A qemu-io ``read``/``write`` command line with a byte pattern: ``write -P 0xa1 0 1048576``."""
    return f"{verb} -P {pattern:#x} {parse_size(offset)} {parse_size(length)}"


def write(path: Path, offset: int | str, length: int | str, pattern: int, fmt: str | None = None) -> None:
    """Write ``pattern`` bytes into an image that no QEMU holds open."""
    command = io_command("write", offset, length, pattern)
    run("qemu-io", "-f", fmt or detect_format(path), "-c", command, str(path), what=f"writing into {path.name}")


def read_matches(path: Path, offset: int | str, length: int | str, pattern: int) -> bool:
    """True when every byte in the range reads as ``pattern`` (through the backing chain)."""
    return runs_match(path, [(offset, length, pattern)])


def runs_match(path: Path | str, runs: list[Run], fmt: str | None = None) -> bool:
    """True when every ``(offset, length, pattern)`` run reads back; one qemu-io for all of them.

    ``path`` may also be a URI such as ``nbd+unix:///export?socket=...`` (then pass ``fmt="raw"``).
    """
    commands = [arg for run_ in runs for arg in ("-c", io_command("read", *run_))]
    name = _shown(path)
    fmt = fmt or detect_format(Path(path))
    done = run_status("qemu-io", "-U", "-r", "-f", fmt, *commands, str(path), what=f"reading {name}")
    if "Pattern verification failed" in done.stdout:
        return False
    if done.returncode != 0:
        raise ToolError(f"reading {name} failed", (done.stderr or done.stdout).strip(), "check the image")
    return True


def _shown(path: Path | str) -> str:
    """A file's name, or a URI whole, for messages."""
    return str(path) if "://" in str(path) else Path(path).name


def info_chain(path: Path) -> list[dict]:
    """``qemu-img info --backing-chain`` as a list, active image first."""
    out = run("qemu-img", "info", "-U", "--backing-chain", "--output=json", str(path), what=f"inspecting {path.name}")
    data = json.loads(out)
    return data if isinstance(data, list) else [data]


def allocation_map(path: Path) -> list[dict]:
    """``qemu-img map --output=json``: which ranges hold data, and at which depth of the chain."""
    return json.loads(run("qemu-img", "map", "-U", "--output=json", str(path), what=f"mapping {path.name}"))


def compare(first: Path | str, second: Path | str, strict: bool = False) -> Comparison:
    """Compare the guest-visible contents of two images (with their backing chains); either may be a URI."""
    args = ["compare", "-U"] + (["-s"] if strict else []) + [str(first), str(second)]
    what = f"comparing {_shown(first)} with {_shown(second)}"
    done = run_status("qemu-img", *args, what=what)
    text = (done.stdout + done.stderr).strip()
    if done.returncode in (0, 1):
        return Comparison(done.returncode == 0, text.splitlines()[-1] if text else "")
    raise ToolError(f"{what} failed", text, "check that both images exist")


def check(path: Path) -> dict:
    """``qemu-img check`` as data: ``{"check-errors": 0, ...}``."""
    try:
        out = run("qemu-img", "check", "-U", "--output=json", str(path), what=f"checking {path.name}")
    except ToolError as error:
        raise ToolError(
            f"checking {path.name} found problems", error.why, "run 'qemu-img check -r all' on a copy"
        ) from None
    return json.loads(out)


def chain_from_image(path: str | Path) -> Chain:
    """The on-disk chain under an image file (``qemu-img info --backing-chain -U``): ``qb.Chain.from_image``."""
    return Chain.from_image_info(info_chain(Path(path)))


# The model reads no files; the image tools give chains the way to be read from disk.
Chain.from_image = staticmethod(chain_from_image)
