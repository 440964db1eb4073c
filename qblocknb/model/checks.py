"""Arguments checked against the current chain before a job command is sent.

QEMU's own errors are often terse ("Cannot find device=node-X nor
node-name=node-X"); these checks name the bad value and the valid ones, and
nothing reaches QEMU when they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain
from qblocknb.model.nbd import is_protocol
from qblocknb.model.paths import resolve

SYNC_MODES = {
    "mirror": ("full", "top", "none"),
    "backup": ("full", "top", "none", "incremental", "bitmap"),
}


def _names(chain: Chain) -> str:
    return ", ".join(chain.node_names) or "none"


def _resolve(chain: Chain, command: str, role: str, name: str) -> int:
    position = chain.index(name)
    if position < 0:
        where = f"the chain of '{chain.device}'" if chain.device else "the chain"
        raise InputError(
            f"{command}: {role} '{name}' is not in {where} ({chain})", f"nodes are {_names(chain)}", "pick one of those"
        )
    return position


def check_device(chain: Chain, command: str, device: str | None, role: str = "device") -> int:
    """The position of the job's device (a node name or the device id); the active layer by default."""
    if device is None or device == chain.device:
        return len(chain) - 1
    return _resolve(chain, command, role, device)


def check_job(
    command: str,
    job_type: str,
    arguments: dict,
    chain: Chain,
    known_nodes: set[str],
    running_jobs: set[str],
    cwd: Path | None,
) -> None:
    """Raise InputError for an argument that cannot work; return quietly otherwise."""
    job_id = arguments.get("job-id")
    if job_id in running_jobs:
        raise InputError(
            f"{command}: job id '{job_id}' is already in use",
            "a job with that id has not ended yet",
            "pick another job-id or wait for that job",
        )
    if not arguments.get("device"):
        raise InputError(f"{command} needs a device", "QEMU requires it", f"pass device={chain.active.label}")
    top = check_device(chain, command, arguments.get("device"))
    if job_type == "stream":
        if top == 0:
            raise InputError(
                f"{command}: '{chain.images[0].label}' has no backing file",
                "there is nothing below it to stream from",
                "pick an overlay as device, or take a snapshot first",
            )
        _check_below(chain, command, top, arguments.get("base-node") or arguments.get("base"), "base")
    elif job_type == "commit":
        if arguments.get("top-node") or arguments.get("top"):
            top = _resolve(chain, command, "top", arguments.get("top-node") or arguments["top"])
        if top == 0:
            raise InputError(
                f"{command}: top '{chain.images[top].label}' is the base image",
                "there is nothing below it to commit into",
                "pick a top above the base",
            )
        _check_below(chain, command, top, arguments.get("base-node") or arguments.get("base"), "base")
    else:
        _check_sync(command, job_type, arguments.get("sync"))
        _check_target(command, arguments, chain, known_nodes, cwd)


def _check_below(chain: Chain, command: str, top: int, base: str | None, role: str) -> None:
    if base is None:
        return
    position = _resolve(chain, command, role, base)
    if position == top:
        below = chain.below(chain.images[top].label)
        raise InputError(
            f"{command}: {role} '{base}' is '{chain.images[top].label}' itself",
            "a job cannot read from and write to the same image",
            f"pick a {role} below it, such as {below[0].label}" if below else "leave the base out",
        )
    if position >= top:
        below = ", ".join(image.label for image in chain.below(chain.images[top].label)) or "none"
        raise InputError(
            f"{command}: {role} '{base}' is not below '{chain.images[top].label}' in {chain}",
            f"nodes below it are {below}",
            "the base must be older than the top",
        )


def _check_sync(command: str, job_type: str, sync: str | None) -> None:
    modes = SYNC_MODES[job_type]
    if sync is None:
        raise InputError(f"{command} needs a sync mode", "", f"pass sync= one of {', '.join(modes)}")
    if sync not in modes:
        raise InputError(
            f"{command}: sync mode '{sync}' is not valid for a {job_type}",
            f"valid modes are {', '.join(modes)}",
            "pick one of those",
        )


def _check_target(command: str, arguments: dict, chain: Chain, known_nodes: set[str], cwd: Path | None) -> None:
    target = arguments.get("target")
    if target is None:
        raise InputError(f"{command} needs a target", "", "pass target=")
    if command.startswith("blockdev-"):
        if target not in known_nodes:
            raise InputError(
                f"{command}: target node '{target}' does not exist",
                f"named nodes are {', '.join(sorted(known_nodes)) or 'none'}",
                "create the image with lab.create() and attach it with vm.blockdev_add(...)",
            )
        if target in chain.node_names:
            raise InputError(
                f"{command}: target node '{target}' is part of the chain {chain}",
                "the job would write into an image it reads from",
                "attach a new image with vm.blockdev_add(...) and pass its node name",
            )
        return
    if is_protocol(target):  # such as nbd:host:port
        return
    check_new_file(command, "target", target, arguments.get("mode"), chain, cwd)


def check_new_file(
    command: str, role: str, name: str, mode: str | None, chain: Chain, cwd: Path | None, on_host: bool = True
) -> None:
    """A file QEMU is to create (or, with ``mode=existing``, open) for a job's target or a snapshot's overlay.

    Refused: a file of the chain or another open image, and, when ``on_host`` says QEMU's files are this host's,
    a missing or unwritable folder and an existing file without ``mode=existing`` (QEMU would overwrite it with
    a new, empty image).
    """
    path = resolve(name, cwd)
    open_image = _open_image(chain, path, cwd)
    if open_image is not None:
        raise InputError(
            f"{command}: {role} '{name}' is already open as {open_image} ({chain})",
            "QEMU would overwrite an image in use",
            "pick a new file name",
        )
    if not on_host:
        return
    if not path.parent.is_dir():
        raise InputError(
            f"{command}: the folder of {role} '{name}' does not exist",
            f"{path.parent} is missing",
            "create the folder first or pick another path",
        )
    if mode == "existing":
        if not path.exists():
            raise InputError(
                f"{command}: {role} '{name}' does not exist but mode is 'existing'",
                "",
                "create it with lab.create() or use mode='absolute-paths'",
            )
        return
    if path.exists():
        raise InputError(
            f"{command}: {role} '{name}' already exists",
            "with mode 'absolute-paths' QEMU would replace it with a new image",
            "pass mode='existing' to write into it, or pick a new file name",
        )
    if not os.access(path.parent, os.W_OK):
        raise InputError(
            f"{command}: the folder of {role} '{name}' is not writable",
            f"{path.parent} does not let this user create files",
            "pick a folder you may write to, such as the lab's",
        )


def _open_image(chain: Chain, path: Path, cwd: Path | None) -> str | None:
    """The label of the chain's (or another open) image stored at ``path``, if any."""
    wanted = os.path.realpath(path)
    for image in (*chain.images, *chain.other_nodes):
        if not is_protocol(image.file) and os.path.realpath(resolve(image.file, cwd)) == wanted:
            return image.label
    return None
