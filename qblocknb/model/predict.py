"""What a command will do to the chain, worked out before it is sent.

``predict(chain, command, arguments)`` checks the arguments against the
current chain (as ``vm.execute`` would, plus the rules QEMU applies to root
nodes and snapshots) and returns the chain while the job runs and the chain
once it is done, with the seed's rule applied to images that leave::

    >>> from qblocknb.model.chain import Chain, Image
    >>> def image(letter, below=None):
    ...     return Image(f"{letter}.qcow2", "qcow2", 64 << 20, node_name=f"node-{letter.upper()}",
    ...                  backing_file=f"{below}.qcow2" if below else None)
    >>> chain = Chain((image("a"), image("b", "a"), image("c", "b"), image("d", "c")), device="virtio0")
    >>> after = predict(chain, "block-stream", {"device": "node-D", "base-node": "node-A", "job-id": "job0"}).after
    >>> str(after), [(r.name, r.note) for r in after.retired]
    ('[a.qcow2] <-- [d.qcow2]', [('b.qcow2', 'still valid: a point in time; safe to delete or keep'), \
('c.qcow2', 'still valid: a point in time; safe to delete or keep')])
    >>> str(predict(chain, "block-commit", {"device": "node-D", "top-node": "node-B", "base-node": "node-A"}).after)
    '[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]'
    >>> str(predict(chain, "drive-mirror", {"device": "node-D", "target": "e.qcow2", "sync": "top"}).after)
    '[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [e.qcow2]'
    >>> predict(chain, "block-stream", {"device": "node-B", "base-node": "node-C"})
    Traceback (most recent call last):
    ...
    qblocknb.errors.InputError: block-stream: base 'node-C' is not below 'node-B' in [a.qcow2] <-- [b.qcow2] \
<-- [c.qcow2] <-- [d.qcow2]: nodes below it are node-A; the base must be older than the top.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain, Image, JobInfo, retire, written_into
from qblocknb.model.checks import check_device, check_job, check_new_file
from qblocknb.model.nbd import is_nbd
from qblocknb.model.vocabulary import JOB_COMMANDS, JobType

SNAPSHOT = "blockdev-snapshot-sync"
COMMANDS = (SNAPSHOT, *JOB_COMMANDS)
PREVIEW_STATUS = "not started"


@dataclass(frozen=True)
class Prediction:
    """The chain while a job runs (None for a snapshot) and once it is done; ``note`` says when "done" is."""

    command: str
    arguments: dict
    during: Chain | None
    after: Chain
    note: str


def predict(
    chain: Chain,
    command: str,
    arguments: dict,
    *,
    running_jobs: set[str] | frozenset[str] = frozenset(),
    cwd: Path | None = None,
) -> Prediction:
    """Check ``arguments`` (QMP names) against ``chain`` and predict the result; InputError when it cannot work."""
    if not chain.images:
        raise InputError(f"{command}: the chain is empty", "there is no image to work on", "launch QEMU on an image")
    known = chain.known_node_names
    if command == SNAPSHOT:
        return _snapshot(chain, arguments, known, cwd)
    if command not in JOB_COMMANDS:
        raise InputError(f"cannot predict '{command}'", f"only {', '.join(COMMANDS)} are known", "")
    job_type = JOB_COMMANDS[command]
    if job_type == JobType.CREATE:
        return _create(chain, arguments)
    check_job(command, job_type, arguments, chain, known, set(running_jobs), cwd)
    if job_type in ("commit", "mirror"):
        _require_root(chain, command, arguments.get("device"))
    source, target = job_ends(chain, job_type, arguments)
    job = JobInfo(arguments.get("job-id") or "new job", job_type, PREVIEW_STATUS, 0, 0, source, target)
    if job_type in ("stream", "commit"):
        during = chain.with_extras(jobs=(job,), retired=chain.retired)
        after, note = _stream(chain, arguments) if job_type == "stream" else _commit(chain, arguments)
    else:
        outside = _target_image(chain, command, arguments)
        during = chain.with_extras(jobs=(job,), targets=(outside,), retired=chain.retired)
        after, note = _mirror(chain, arguments, outside) if job_type == "mirror" else _backup(chain, outside)
    return Prediction(command, dict(arguments), during, after, note)


def job_ends(chain: Chain, job_type: str, arguments: dict) -> tuple[str | None, str | None]:
    """Where a job reads and where it writes: backing -> overlay, top -> base, source -> target; a create job
    reads nothing and writes the file it makes or the node it formats."""
    if job_type == JobType.CREATE:
        options = arguments.get("options") or {}
        made = options.get("filename") or options.get("file")
        return None, made if isinstance(made, str) else None
    top = chain.images[check_device(chain, job_type, arguments.get("device"))]
    if job_type == "stream":
        below = chain.below(top.label)
        return (below[0].label if below else None), top.label
    if job_type == "commit":
        source = arguments.get("top-node") or arguments.get("top") or chain.active.label
        return source, arguments.get("base-node") or arguments.get("base") or chain.base.label
    return top.label, arguments.get("target")


def _require_root(chain: Chain, command: str, device: str | None) -> None:
    """QEMU's commit and mirror take the root node (the active layer) as ``device``."""
    if device is None or device == chain.device or chain.find(device) is chain.active:
        return
    raise InputError(
        f"{command}: device '{device}' is not the active layer of {chain}",
        f"QEMU wants the root node, here '{chain.active.label}'",
        f"pass device={chain.active.label}"
        + (" and pick the layer with top-node" if command == "block-commit" else ""),
    )


def _retired(chain: Chain, leaving: list[Image], job_type: str, writes_into: Image | None = None) -> tuple:
    """The chain's retired images after a job: those ``leaving`` join, each with the files it reads through, and
    a commit's write into its base ends the validity of the earlier ones that read through it."""
    earlier = chain.retired if writes_into is None else written_into(chain.retired, writes_into.file, job_type)
    files = [image.file for image in chain.images]
    return earlier + tuple(retire(image, job_type, tuple(files[: chain.images.index(image)])) for image in leaving)


def _position(chain: Chain, name: str | None, default: int) -> int:
    return chain.index(name) if name else default


# -- the commands ----------------------------------------------------------------------------------
def _snapshot(chain: Chain, arguments: dict, known: set[str], cwd: Path | None) -> Prediction:
    node = arguments.get("node-name") or arguments.get("device")
    if node is None:
        raise InputError(f"{SNAPSHOT} needs node-name", "", f"pass node-name={chain.active.label}")
    position = check_device(chain, SNAPSHOT, node, "node-name")
    if chain.images[position] is not chain.active:
        raise InputError(
            f"{SNAPSHOT}: node '{node}' is not the active layer of {chain}",
            "QEMU puts a new overlay only on the top of the chain",
            f"pass node-name={chain.active.label}",
        )
    file = arguments.get("snapshot-file")
    if not file:
        raise InputError(f"{SNAPSHOT} needs snapshot-file", "", "name the new overlay, such as e.qcow2")
    new_node = arguments.get("snapshot-node-name")
    if new_node is not None and (not new_node or new_node in known):
        what = f"snapshot node name '{new_node}' is already taken" if new_node else "the snapshot node name is empty"
        raise InputError(
            f"{SNAPSHOT}: {what}",
            f"node names in use are {', '.join(sorted(known))}",
            "pick a new one, such as node-E",
        )
    # QEMU's folder unknown (a QEMU we did not start, maybe on another host): only what the chain shows is checked
    check_new_file(SNAPSHOT, "snapshot file", file, arguments.get("mode"), chain, cwd, on_host=cwd is not None)
    top = chain.active
    overlay = Image(
        file=file,
        format=arguments.get("format", "qcow2"),
        virtual_size=top.virtual_size,
        node_name=new_node,
        backing_file=top.file,
        device=chain.device,
    )
    images = (*chain.images[:-1], replace(top, device=None, read_only=True, bitmaps=()), overlay)
    return Prediction(SNAPSHOT, dict(arguments), None, replace(chain, images=images, jobs=()), "at once")


def _stream(chain: Chain, arguments: dict) -> tuple[Chain, str]:
    top = check_device(chain, "block-stream", arguments.get("device"))
    base = _position(chain, arguments.get("base-node") or arguments.get("base"), -1)
    leaving = list(chain.images[base + 1 : top])
    new_top = replace(chain.images[top], backing_file=chain.images[base].file if base >= 0 else None)
    images = (*chain.images[: base + 1], new_top, *chain.images[top + 1 :])
    after = replace(chain, images=images, jobs=(), targets=(), retired=_retired(chain, leaving, "stream"))
    return after, "once the stream ends"


def _commit(chain: Chain, arguments: dict) -> tuple[Chain, str]:
    top = _position(chain, arguments.get("top-node") or arguments.get("top"), len(chain) - 1)
    base = _position(chain, arguments.get("base-node") or arguments.get("base"), 0)
    leaving = list(chain.images[base + 1 : top + 1])
    above = [replace(chain.images[top + 1], backing_file=chain.images[base].file)] if top + 1 < len(chain) else []
    kept_base = chain.images[base]
    active_commit = top == len(chain) - 1
    if active_commit:
        kept_base = replace(kept_base, device=chain.device, read_only=False)
    images = (*chain.images[:base], kept_base, *above, *chain.images[top + 2 :])
    retired = _retired(chain, leaving, "commit", writes_into=chain.images[base])
    after = replace(chain, images=images, jobs=(), targets=(), retired=retired)
    note = "after block-job-complete (the pivot of an active commit)" if active_commit else "once the commit ends"
    return after, note


def _mirror(chain: Chain, arguments: dict, target: Image) -> tuple[Chain, str]:
    # full copies everything, top keeps the backing files, none starts the target as an overlay of the source
    kept = {"full": 0, "top": len(chain) - 1}.get(arguments.get("sync", ""), len(chain))
    keep, leaving = chain.images[:kept], list(chain.images[kept:])
    active = replace(target, backing_file=keep[-1].file if keep else None, device=chain.device, read_only=False)
    if keep and keep[-1] is chain.active:
        keep = (*keep[:-1], replace(chain.active, device=None, read_only=True))
    after = replace(chain, images=(*keep, active), jobs=(), targets=(), retired=_retired(chain, leaving, "mirror"))
    return after, "after block-job-complete (the pivot); block-job-cancel after READY leaves the chain as it is"


def _backup(chain: Chain, target: Image) -> tuple[Chain, str]:
    return replace(chain, jobs=(), targets=(target,)), "once the backup ends: a point-in-time copy outside the chain"


def _create(chain: Chain, arguments: dict) -> Prediction:
    """``blockdev-create`` writes a new image outside every chain: the chain stays as it is."""
    options = arguments.get("options") or {}
    _, made = job_ends(chain, JobType.CREATE, arguments)
    job = JobInfo(arguments.get("job-id") or "new job", JobType.CREATE, PREVIEW_STATUS, target=made)
    outside = Image(file=made or "?", format=options.get("driver", "?"), virtual_size=options.get("size", 0))
    during = chain.with_extras(jobs=(job,), targets=(outside,), retired=chain.retired)
    note = "once the job ends; the new image joins no chain until a mirror or a snapshot takes it"
    return Prediction("blockdev-create", dict(arguments), during, replace(chain, jobs=(), targets=()), note)


def _target_image(chain: Chain, command: str, arguments: dict) -> Image:
    """The mirror's or backup's destination as an image outside the chain."""
    target = arguments["target"]
    for image in chain.other_nodes:
        if target in image.names:
            return image
    source = chain.images[check_device(chain, command, arguments.get("device"))]
    return Image(
        file=target,
        format=arguments.get("format") or ("raw" if is_nbd(target) else source.format),
        virtual_size=source.virtual_size,
        node_name=arguments.get("node-name"),
    )
