"""The seed's QMP intents in libvirt's terms: the virDomain call that does the same, and its virsh line.

Pure (no libvirt import): ``translate`` gives a ``LibvirtCall`` whose ``method`` a libvirt-native backend
calls as ``getattr(dom, call.method)(*call.args, flags)``, with ``flags`` the OR of the named constants;
``virsh_line`` gives the line a tutorial shows beside the qmp-shell one.  Layers are named the way libvirt
takes them: ``vda[3]`` when the chain's node names are libvirt's own, else the image's file::

    >>> from qblocknb.model.chain import Chain, Image
    >>> chain = Chain((Image("/lab/a.qcow2", "qcow2", 0, node_name="vda[2]"),
    ...                Image("/lab/b.qcow2", "qcow2", 0, node_name="vda[1]", backing_file="/lab/a.qcow2")))
    >>> virsh_line("block-stream", {"device": "vda[1]", "base-node": "vda[2]", "speed": 1048576}, chain, "web")
    "virsh blockpull web vda --base 'vda[2]' --bandwidth 1048576 --bytes --wait --verbose"
    >>> call = translate("block-commit", {"device": "vda", "base-node": "vda[2]", "speed": 1048576}, chain)
    >>> call.method, call.args, call.flags
    ('blockCommit', ('vda', 'vda[2]', None, 1048576), ('VIR_DOMAIN_BLOCK_COMMIT_ACTIVE', \
'VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES'))
    >>> virsh_line("block-job-pause", {"device": "job0"}, chain)
    '# libvirt cannot: pause or resume a block job (its API has no such call)'

The mapping, command by command: the QMP command, the libvirt call (its flags are ``VIR_DOMAIN_`` constants),
the virsh line; ``DOM`` and ``vda`` are the domain and the disk, ``REF`` is ``vda[N]`` or a file, ``N`` bytes::

    blockdev-snapshot-sync, of the active layer
        snapshotCreateXML(xml, SNAPSHOT_CREATE_DISK_ONLY|NO_METADATA|ATOMIC [|REUSE_EXT if mode=existing])
        snapshot-create-as DOM --disk-only --no-metadata --atomic [--reuse-external]
            --diskspec vda,snapshot=external,driver=qcow2,file=PATH
    block-stream, into the active layer
        blockRebase(vda, REF or None, speed [, BLOCK_REBASE_BANDWIDTH_BYTES if speed])
        blockpull DOM vda [--base REF] [--bandwidth N --bytes] --wait --verbose
    block-commit
        blockCommit(vda, base REF or None, top REF or None, speed,
                    [BLOCK_COMMIT_ACTIVE if the top is the active layer] [|BLOCK_COMMIT_BANDWIDTH_BYTES if speed])
        blockcommit DOM vda [--top REF] [--base REF] [--active] [--bandwidth N --bytes] --wait --verbose
    drive-mirror, blockdev-mirror (its target from blockdev-add), sync=full or top
        blockCopy(vda, "<disk type='file'><source file=.../><driver type=.../></disk>",
                  {"bandwidth": speed, "granularity": ..., "buf-size": ...},
                  BLOCK_COPY_TRANSIENT_JOB [|SHALLOW if sync=top] [|REUSE_EXT if the target exists])
        blockcopy DOM vda --dest PATH --format F [--shallow] [--reuse-external] --transient-job
            [--bandwidth N --bytes] [--granularity N] [--buf-size N] --wait --verbose
    drive-backup, blockdev-backup, sync=full, incremental or bitmap
        backupBegin("<domainbackup mode='push'>[<incremental>C</incremental>]<disks>...", checkpoint xml or None
                    [, BACKUP_BEGIN_REUSE_EXTERNAL if the target exists])
        backup-begin DOM --backupxml <(echo "<domainbackup ...>") [--checkpointxml <(echo ...)] [--reuse-external]
    block-dirty-bitmap-add
        checkpointCreateXML("<domaincheckpoint><name>B</name><disks><disk name='vda' checkpoint='bitmap' ...")
        checkpoint-create-as DOM B --diskspec vda,checkpoint=bitmap,bitmap=B
    transaction of block-dirty-bitmap-add B and a full drive-backup or blockdev-backup
        backupBegin(full backup xml, checkpoint xml of B): libvirt's own idiom, one call
        backup-begin DOM --backupxml <(echo ...) --checkpointxml <(echo ...)
    block-job-complete, job-complete
        blockJobAbort(vda, BLOCK_JOB_ABORT_PIVOT)
        blockjob DOM vda --pivot
    block-job-cancel, job-cancel
        blockJobAbort(vda); of a backup job (job_type="backup"), abortJobFlags()
        blockjob DOM vda --abort; of a backup job, domjobabort DOM
    block-job-set-speed
        blockJobSetSpeed(vda, speed, BLOCK_JOB_SPEED_BANDWIDTH_BYTES)
        blockjob DOM vda --bandwidth N --bytes
    blockdev-add: nothing is sent (the node is named when a mirror or backup uses it); no virsh line
    query-block-jobs, query-block, query-named-block-nodes, query-status: answered from libvirt's reads
        blockjob DOM vda --info; domblklist DOM --details; dumpxml DOM; domstate DOM --reason

Refused (``NoLibvirtEquivalent``), each with its alternative; ``passthrough=True`` always remains, sending
the QMP command through libvirt's monitor passthrough (which taints the domain):

- a snapshot of a layer below the top: snapshot the active layer;
- a stream into an intermediate image: stream into the top;
- a mirror or backup of an intermediate image: copy the disk, from its active layer;
- mirror ``sync=none`` or ``bitmap``: ``sync=top``;
- a mirror to an NBD export: ``virsh migrate --copy-storage-all`` (libvirt copies storage within migration);
- backup ``sync=top`` or ``none``: ``sync=full``;
- pause, resume, finalize, dismiss of a job: let it run (set its speed), libvirt finalizes and dismisses its own;
- setting the speed of a backup job: libvirt's backups run at full speed (a backup's ``speed`` is dropped);
- any other transaction than a bitmap add with a full backup; any other command.

Incremental backups differ in one point: QMP's ``sync=incremental`` clears the bitmap after a successful
backup, while a libvirt checkpoint is never cleared.  So an incremental from bitmap ``B`` is
``<incremental>C</incremental>`` with ``C`` the checkpoint ``B`` stands for now (``B`` itself at first), and
the same ``backupBegin`` creates the next checkpoint, ``B.1`` (then ``B.2``, ...), which ``B`` stands for
after it: the next incremental copies what changed since this one, as in QMP.  ``LibvirtCall.checkpoint``
says ``(B, new checkpoint)``; ``Notes`` keeps the mapping (and ``blockdev-add``'s nodes) for a session.
``sync=bitmap`` maps like ``incremental``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from xml.sax.saxutils import escape

from qblocknb.errors import InputError
from qblocknb.model.chain import PROTOCOL_DRIVERS, Chain, Image
from qblocknb.model.nbd import is_protocol

LIBVIRT_NODE = re.compile(r"^[a-z]+\[\d+\]$")  # vda[3]: a layer as libvirt names it
PASSTHROUGH = "or connect with qb.connect_libvirt(..., passthrough=True) to send the QMP command as it is"
WAIT = ("--wait", "--verbose")
QUOTES = {"'": "&apos;", '"': "&quot;"}
QUERIES: dict[str, Callable[[str, str], tuple[str, ...]]] = {
    "query-block-jobs": lambda domain, disk: ("blockjob", domain, disk, "--info"),
    "query-block": lambda domain, disk: ("domblklist", domain, "--details"),
    "query-named-block-nodes": lambda domain, disk: ("dumpxml", domain),
    "query-status": lambda domain, disk: ("domstate", domain, "--reason"),
}
_PAUSE = ("pause or resume a block job", "its API has no such call", "let the job run, slowed with block-job-set-speed")
_FINISH = ("finalize or dismiss a job", "it finalizes and dismisses its jobs itself", "leave that to libvirt")
REFUSED = {
    f"{prefix}-{verb}": reason
    for prefix in ("block-job", "job")
    for verb, reason in (("pause", _PAUSE), ("resume", _PAUSE), ("finalize", _FINISH), ("dismiss", _FINISH))
}


class XmlFile(str):
    """An XML document that virsh reads from a file: the line shows it inline, as ``<(echo "...")``."""


@dataclass(frozen=True)
class LibvirtCall:
    """One virDomain call; ``method`` is ``""`` when nothing is sent to libvirt (``blockdev-add``, queries)."""

    method: str
    args: tuple  # after the domain, the flags argument (always last) left out
    flags: tuple[str, ...]  # names of libvirt constants OR'ed into the flags argument
    virsh: tuple[str, ...]  # virsh's argv without "virsh"; empty when virsh has no such command
    checkpoint: tuple[str, str] | None = None  # (QMP bitmap, the checkpoint it stands for once this call succeeded)

    def line(self) -> str:
        """The virsh line, quoted for a shell; an XML document inline, as a process substitution.

        >>> print(LibvirtCall("", (), (), ("backup-begin", "my vm", "--backupxml", XmlFile("<a b='$x'/>"))).line())
        virsh backup-begin 'my vm' --backupxml <(echo "<a b='\\$x'/>")
        """
        if not self.virsh:
            return ""
        words = [_inline(word) if isinstance(word, XmlFile) else shlex.quote(word) for word in self.virsh]
        return " ".join(["virsh", *words])


class NoLibvirtEquivalent(InputError):
    """What libvirt's API cannot do, why, and the alternative."""

    def __init__(self, cannot: str, why: str, todo: str) -> None:
        self.cannot = cannot
        super().__init__(f"libvirt cannot {cannot}", why, f"{todo}, {PASSTHROUGH}")


@dataclass
class Notes:
    """What a session's commands made that later ones name: nodes added with ``blockdev-add``, and the
    checkpoint each QMP bitmap stands for (it moves on with each incremental backup)."""

    added: dict[str, dict] = field(default_factory=dict)
    checkpoints: dict[str, str] = field(default_factory=dict)

    def remember(self, command: str, arguments: dict, call: LibvirtCall) -> None:
        """Keep what ``call`` made, once it succeeded."""
        if command == "blockdev-add" and "node-name" in arguments:
            self.added[arguments["node-name"]] = arguments
        if call.checkpoint is not None:
            bitmap, checkpoint = call.checkpoint
            self.checkpoints[bitmap] = checkpoint

    def line(
        self,
        command: str,
        arguments: dict,
        chain: Chain,
        domain: str = "DOM",
        disk: str = "vda",
        job_type: str = "",
        remember: bool = False,
    ) -> str:
        """``virsh_line`` after this session's commands; ``remember`` keeps what this one makes (a line only
        read, as in a history, counts as done)."""
        if command not in TRANSLATIONS and command not in QUERIES and command not in REFUSED:
            return ""
        try:
            call = translate(command, arguments, chain, domain, disk, self.added, self.checkpoints, job_type)
        except NoLibvirtEquivalent as refused:
            return f"# libvirt cannot: {refused.cannot} ({refused.why})"
        if remember:
            self.remember(command, arguments, call)
        return call.line()


def translate(
    command: str,
    arguments: dict,
    chain: Chain,
    domain: str = "DOM",
    disk: str = "vda",
    added: Mapping[str, dict] = {},
    checkpoints: Mapping[str, str] = {},
    job_type: str = "",
) -> LibvirtCall:
    """The libvirt call that carries out ``command`` (QMP arguments: dash names, sizes in bytes) on ``chain``.

    ``added`` maps ``blockdev-add``'s node names to its arguments (mirror and backup targets), ``checkpoints``
    QMP bitmaps to the checkpoints they stand for (see ``Notes``), and ``job_type`` says which job a verb is
    for (a ``backup`` is cancelled with ``abortJobFlags``).  NoLibvirtEquivalent for what libvirt cannot do.
    """
    if command in QUERIES:
        return LibvirtCall("", (), (), QUERIES[command](domain, disk))
    if command in REFUSED:
        raise NoLibvirtEquivalent(*REFUSED[command])
    if command not in TRANSLATIONS:
        raise NoLibvirtEquivalent(
            f"run {command}", "qblocknb maps only the seed's block operations to libvirt's API", "use QMP for it"
        )
    return TRANSLATIONS[command](_Context(command, arguments, chain, domain, disk, added, checkpoints, job_type))


def virsh_line(
    command: str,
    arguments: dict,
    chain: Chain,
    domain: str = "DOM",
    disk: str = "vda",
    added: Mapping[str, dict] = {},
) -> str:
    """The virsh line of ``command``; ``""`` when virsh has none, ``# libvirt cannot: ...`` when libvirt cannot."""
    return Notes(dict(added)).line(command, arguments, chain, domain, disk)


# -- the translations --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """One command to translate, with what it is translated against."""

    command: str
    arguments: dict
    chain: Chain
    domain: str
    disk: str
    added: Mapping[str, dict]
    checkpoints: Mapping[str, str]
    job_type: str

    def layer(self, name: str, role: str) -> Image:
        """The chain's layer called ``name`` (node name, file or basename; the disk stands for its active layer)."""
        if self.chain.images and name in (self.disk, self.chain.device):
            return self.chain.active
        image = self.chain.find(name)
        if image is None:
            layers = ", ".join(i.node_name or i.file for i in self.chain.images) or "none"
            raise InputError(
                f"{self.command}: {role} '{name}' is not in the chain {self.chain}",
                f"its layers are {layers}",
                "name one of those",
            )
        return image

    def top(self, key: str, cannot: str, why: str, todo: str) -> Image:
        """The layer ``arguments[key]`` names, refused unless it is the active one (libvirt works on the top)."""
        image = self.layer(self.arguments[key], key)
        if image != self.chain.active:
            raise NoLibvirtEquivalent(f"{cannot} ({image.label})", why, todo)
        return image

    def reference(self, *keys: str) -> str | None:
        """How libvirt names the layer that the first given of ``keys`` names: ``vda[N]``, else its file."""
        name = next((self.arguments[key] for key in keys if self.arguments.get(key)), None)
        if name is None:
            return None
        image = self.layer(name, keys[0])
        return image.node_name if image.node_name and LIBVIRT_NODE.match(image.node_name) else image.file

    def call(self, method: str, args: tuple, flags: list[str], virsh: list[str], **more) -> LibvirtCall:
        """A LibvirtCall; ``flags`` without their ``VIR_DOMAIN_`` prefix."""
        return LibvirtCall(method, args, tuple(f"VIR_DOMAIN_{flag}" for flag in flags), tuple(virsh), **more)


def _snapshot(c: _Context) -> LibvirtCall:
    key = "node-name" if c.arguments.get("node-name") else "device"
    c.top(
        key, "snapshot a layer below the top", "a disk-only snapshot goes on the disk's active layer", "snapshot that"
    )
    file, fmt = c.arguments["snapshot-file"], c.arguments.get("format", "qcow2")
    existing = c.arguments.get("mode") == "existing"
    disk = _tag("disk", {"name": c.disk, "snapshot": "external"}, _tag("driver", {"type": fmt}), _source(file))
    flags = ["SNAPSHOT_CREATE_DISK_ONLY", "SNAPSHOT_CREATE_NO_METADATA", "SNAPSHOT_CREATE_ATOMIC"]
    spec = f"{c.disk},snapshot=external,driver={fmt},file={file.replace(',', ',,')}"  # virsh doubles a comma
    virsh = ["snapshot-create-as", c.domain, "--disk-only", "--no-metadata", "--atomic"]
    return c.call(
        "snapshotCreateXML",
        (_tag("domainsnapshot", {}, _tag("disks", {}, disk)),),
        flags + ["SNAPSHOT_CREATE_REUSE_EXT"] * existing,
        [*virsh, *["--reuse-external"] * existing, "--diskspec", spec],
    )


def _stream(c: _Context) -> LibvirtCall:
    why = "it pulls data only into the disk's active layer"
    c.top("device", "stream into an intermediate image", why, f"stream into the top ({c.disk}) then")
    base, speed = c.reference("base-node", "base"), c.arguments.get("speed", 0)
    virsh = ["blockpull", c.domain, c.disk, *_option("--base", base), *_bandwidth(speed), *WAIT]
    return c.call("blockRebase", (c.disk, base, speed), ["BLOCK_REBASE_BANDWIDTH_BYTES"] * bool(speed), virsh)


def _commit(c: _Context) -> LibvirtCall:
    named = c.arguments.get("top-node") or c.arguments.get("top")
    active = named is None or c.layer(named, "top") == c.chain.active
    top = None if active else c.reference("top-node", "top")
    base, speed = c.reference("base-node", "base"), c.arguments.get("speed", 0)
    flags = ["BLOCK_COMMIT_ACTIVE"] * active + ["BLOCK_COMMIT_BANDWIDTH_BYTES"] * bool(speed)
    virsh = ["blockcommit", c.domain, c.disk, *_option("--top", top), *_option("--base", base)]
    virsh += ["--active"] * active + [*_bandwidth(speed), *WAIT]
    return c.call("blockCommit", (c.disk, base, top, speed), flags, virsh)


def _mirror(c: _Context) -> LibvirtCall:
    sync = c.arguments.get("sync", "full")
    if sync not in ("full", "top"):
        raise NoLibvirtEquivalent(f"mirror with sync={sync}", "blockCopy copies the whole disk or its top", "use top")
    file, fmt, existing = _target(c)
    if is_protocol(file):
        raise NoLibvirtEquivalent(
            f"mirror to {file}",
            "libvirt copies storage to another host within a migration",
            "use virsh migrate --copy-storage-all (dom.migrateToURI3 with NON_SHARED_DISK)",
        )
    names = {"speed": "bandwidth", "granularity": "granularity", "buf-size": "buf-size"}
    params = {name: c.arguments[key] for key, name in names.items() if c.arguments.get(key)}
    flags = ["BLOCK_COPY_SHALLOW"] * (sync == "top") + ["BLOCK_COPY_REUSE_EXT"] * existing
    virsh = ["blockcopy", c.domain, c.disk, "--dest", file, "--format", fmt]
    virsh += ["--shallow"] * (sync == "top") + ["--reuse-external"] * existing + ["--transient-job"]
    virsh += _bandwidth(params.get("bandwidth", 0))
    virsh += [word for name in ("granularity", "buf-size") for word in _option(f"--{name}", params.get(name))]
    destxml = _tag("disk", {"type": "file"}, _source(file), _tag("driver", {"type": fmt}))
    return c.call("blockCopy", (c.disk, destxml, params), [*flags, "BLOCK_COPY_TRANSIENT_JOB"], [*virsh, *WAIT])


def _backup(c: _Context, checkpoint: str | None = None) -> LibvirtCall:
    """A push backup; ``checkpoint`` names the one a full backup creates (in a transaction with a bitmap add)."""
    sync = c.arguments.get("sync", "full")
    if sync not in ("full", "incremental", "bitmap"):
        why = "a libvirt backup copies the whole disk or what changed since a checkpoint"
        raise NoLibvirtEquivalent(f"back up with sync={sync}", why, "use sync=full")
    file, fmt, existing = _target(c)
    since, made = "", None
    if sync != "full":
        bitmap = c.arguments["bitmap"]
        since = c.checkpoints.get(bitmap, bitmap)
        checkpoint = f"{bitmap}.{int(since[len(bitmap) + 1 :] or 0) + 1}"  # B, then B.1, B.2, ...
        made = (bitmap, checkpoint)
    disk = _tag("disk", {"name": c.disk, "type": "file"}, _tag("target", {"file": file}), _tag("driver", {"type": fmt}))
    incremental = _tag("incremental", {}, text=since) if since else ""
    backupxml = _tag("domainbackup", {"mode": "push"}, incremental, _tag("disks", {}, disk))
    checkpointxml = _checkpoint_xml(c.disk, checkpoint) if checkpoint else None
    virsh = ["backup-begin", c.domain, "--backupxml", XmlFile(backupxml)]
    virsh += ["--checkpointxml", XmlFile(checkpointxml)] * bool(checkpointxml) + ["--reuse-external"] * existing
    flags = ["BACKUP_BEGIN_REUSE_EXTERNAL"] * existing
    return c.call("backupBegin", (backupxml, checkpointxml), flags, virsh, checkpoint=made)


def _bitmap_add(c: _Context) -> LibvirtCall:
    name = c.arguments["name"]
    virsh = ["checkpoint-create-as", c.domain, name, "--diskspec", f"{c.disk},checkpoint=bitmap,bitmap={name}"]
    return c.call("checkpointCreateXML", (_checkpoint_xml(c.disk, name),), [], virsh, checkpoint=(name, name))


def _transaction(c: _Context) -> LibvirtCall:
    """A bitmap add with a full backup is libvirt's own idiom: one full backup that creates the checkpoint."""
    actions = c.arguments.get("actions", [])
    data = {action.get("type"): action.get("data", {}) for action in actions}
    backup = next((kind for kind in data if kind in ("drive-backup", "blockdev-backup")), None)
    bitmap = data.get("block-dirty-bitmap-add")
    if len(actions) != 2 or bitmap is None or backup is None or data[backup].get("sync", "full") != "full":
        shown = ", ".join(f"{a.get('type')} {a.get('data', {}).get('sync', '')}".strip() for a in actions)
        why = "it makes only a full backup and a checkpoint at one instant"
        raise NoLibvirtEquivalent(f"run a transaction of {shown or 'nothing'}", why, "send the actions one by one")
    call = _backup(replace(c, command=backup, arguments=data[backup]), checkpoint=bitmap["name"])
    return replace(call, checkpoint=(bitmap["name"], bitmap["name"]))


def _pivot(c: _Context) -> LibvirtCall:
    return c.call("blockJobAbort", (c.disk,), ["BLOCK_JOB_ABORT_PIVOT"], ["blockjob", c.domain, c.disk, "--pivot"])


def _cancel(c: _Context) -> LibvirtCall:
    if c.job_type == "backup":  # a backup is a domain job, not a block job
        return c.call("abortJobFlags", (), [], ["domjobabort", c.domain])
    return c.call("blockJobAbort", (c.disk,), [], ["blockjob", c.domain, c.disk, "--abort"])


def _set_speed(c: _Context) -> LibvirtCall:
    if c.job_type == "backup":
        why = "libvirt's backups have no bandwidth setting"
        raise NoLibvirtEquivalent("set the speed of a backup job", why, "let it run at full speed")
    speed = c.arguments["speed"]
    virsh = ["blockjob", c.domain, c.disk, *_bandwidth(speed)]
    return c.call("blockJobSetSpeed", (c.disk, speed), ["BLOCK_JOB_SPEED_BANDWIDTH_BYTES"], virsh)


TRANSLATIONS: dict[str, Callable[[_Context], LibvirtCall]] = {
    "blockdev-snapshot-sync": _snapshot,
    "block-stream": _stream,
    "block-commit": _commit,
    "drive-mirror": _mirror,
    "blockdev-mirror": _mirror,
    "drive-backup": _backup,
    "blockdev-backup": _backup,
    "block-dirty-bitmap-add": _bitmap_add,
    "transaction": _transaction,
    "blockdev-add": lambda c: LibvirtCall("", (), (), ()),  # nothing to send: the target is named when used
    "block-job-complete": _pivot,
    "job-complete": _pivot,
    "block-job-cancel": _cancel,
    "job-cancel": _cancel,
    "block-job-set-speed": _set_speed,
}


# -- helpers -----------------------------------------------------------------------------------------
def _target(c: _Context) -> tuple[str, str, bool]:
    """A mirror's or backup's target: its file, its format, and whether it exists already (REUSE_EXT).

    The source is the disk: libvirt copies it as the guest sees it, from its active layer.
    """
    source = c.top("device", "copy an intermediate image", "it copies the disk from its active layer", "copy the disk")
    target = c.arguments["target"]
    if c.command.startswith("drive-"):
        return target, c.arguments.get("format") or source.format, c.arguments.get("mode") == "existing"
    found = _added_file(c.added, target) or next(
        ((i.file, i.format) for i in c.chain.other_nodes if i.node_name == target), None
    )
    if found is None:
        raise InputError(
            f"{c.command}: target node '{target}' is not known",
            "it was not added with blockdev-add in this session",
            "add it with blockdev-add first",
        )
    return (*found, True)


def _added_file(added: Mapping[str, dict], node: str) -> tuple[str, str] | None:
    """The file and format of a node ``blockdev-add`` made: a format node over a ``file`` node, or a file node."""
    options = added.get(node)
    if options is None:
        return None
    inner = options.get("file", options)
    if isinstance(inner, str):  # the file node was added on its own, by name
        inner = added.get(inner, {})
    driver = options.get("driver", "raw")
    filename = inner.get("filename") if isinstance(inner, dict) else None
    return (filename, "raw" if driver in PROTOCOL_DRIVERS else driver) if filename else None


def _checkpoint_xml(disk: str, name: str) -> str:
    bitmap = _tag("disk", {"name": disk, "checkpoint": "bitmap", "bitmap": name})
    return _tag("domaincheckpoint", {}, _tag("name", {}, text=name), _tag("disks", {}, bitmap))


def _tag(name: str, attributes: Mapping[str, str], *children: str, text: str = "") -> str:
    """One XML element, its values escaped.

    >>> _tag("source", {"file": "/lab/o'k & <b>.qcow2"})
    "<source file='/lab/o&apos;k &amp; &lt;b&gt;.qcow2'/>"
    """
    shown = "".join(f" {key}='{escape(str(value), QUOTES)}'" for key, value in attributes.items())
    inner = "".join(children) + escape(text)
    return f"<{name}{shown}>{inner}</{name}>" if inner else f"<{name}{shown}/>"


def _source(file: str) -> str:
    return _tag("source", {"file": file})


def _option(name: str, value: object) -> list[str]:
    """``[name, value]`` when a value is given, else nothing."""
    return [name, str(value)] if value else []


def _bandwidth(speed: int) -> list[str]:
    """virsh's bandwidth in bytes per second (without ``--bytes`` it reads MiB/s)."""
    return [*_option("--bandwidth", speed), "--bytes"] if speed else []


def _inline(xml: str) -> str:
    """A document as a file a shell makes on the fly: ``<(echo "...")``, with what double quotes expand escaped."""
    return '<(echo "' + re.sub(r'([\\"$`])', r"\\\1", xml) + '")'
