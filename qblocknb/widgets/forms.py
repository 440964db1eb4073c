"""One form per seed command, with dropdowns filled from the current chain.

``SnapshotForm`` (blockdev-snapshot-sync), ``StreamForm`` (block-stream),
``CommitForm`` (block-commit), ``MirrorForm`` (drive-mirror /
blockdev-mirror) and ``BackupForm`` (drive-backup / blockdev-backup).
Arguments use the seed's names; defaults follow the seed (``node-D``,
``e.qcow2``, ``job0``) as far as the chain allows.
"""

from __future__ import annotations

from string import ascii_lowercase

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain
from qblocknb.model.checks import SYNC_MODES
from qblocknb.widgets.form import NONE, CommandForm, dropdown, job_arguments, node_options, optional, text

SAME_FORMAT = "(as the source)"


def fresh_image(vm, chain: Chain) -> tuple[str, str]:
    """The first ``x.qcow2`` / ``node-X`` pair after the chain's letters that is free on disk and in QEMU."""
    taken_nodes = chain.known_node_names
    taken_files = {i.name for i in (*chain.images, *chain.other_nodes, *chain.targets)}
    taken_files |= {r.name for r in chain.retired}
    for letter in ascii_lowercase[1:]:
        file, node = f"{letter}.qcow2", f"node-{letter.upper()}"
        if file not in taken_files and node not in taken_nodes and not vm.host_path(file).exists():
            return file, node
    return "overlay.qcow2", "node-overlay"


def _job_fields(vm) -> dict:
    return {"job-id": text("job-id", vm.next_job_id()), "speed": text("speed (bytes/s)", "0", "0 = unlimited, or 1M")}


def _fresh_job_id(form: CommandForm) -> None:
    """Move the job id on once a job of this session has taken it."""
    if form.fields["job-id"].value in {job.id for job in form.vm.job_list}:
        form.fields["job-id"].value = form.vm.next_job_id()


class SnapshotForm(CommandForm):
    """``blockdev-snapshot-sync``: a new overlay on top of the active layer."""

    commands = ("blockdev-snapshot-sync",)
    title = "External snapshot: a new overlay on top of the chain"

    def build_fields(self) -> dict:
        return {
            "node-name": dropdown("node-name"),
            "snapshot-file": text("snapshot-file"),
            "snapshot-node-name": text("snapshot-node-name"),
            "format": dropdown("format", ["qcow2"]),
        }

    def fill(self, chain: Chain) -> None:
        self.offer("node-name", node_options(chain.images), chain.active.node_name)
        if not self.fields["snapshot-file"].value:
            self.after_run(None)

    def after_run(self, result) -> None:
        file, node = fresh_image(self.vm, self.chain)
        self.fields["snapshot-file"].value, self.fields["snapshot-node-name"].value = file, node

    def arguments(self) -> dict:
        node = self.fields["snapshot-node-name"].value.strip()
        arguments = {
            "node-name": self.fields["node-name"].value,
            "snapshot-file": self.fields["snapshot-file"].value.strip(),
            "snapshot-node-name": node,
            "format": self.fields["format"].value,
        }
        if not node:
            del arguments["snapshot-node-name"]  # QEMU then makes up a name such as #block123
        return arguments


class StreamForm(CommandForm):
    """``block-stream``: copy data up from the backing files into ``device``."""

    commands = ("block-stream",)
    title = "Stream: pull data from backing files up into an overlay"

    def build_fields(self) -> dict:
        return {"device": dropdown("device"), "base-node": dropdown("base-node"), **_job_fields(self.vm)}

    def fill(self, chain: Chain) -> None:
        self.offer("device", node_options(chain.images[1:]), chain.active.node_name)
        below = chain.below(self.fields["device"].value or chain.active.label)
        self.offer("base-node", [(f"{NONE}: stream all", NONE), *node_options(below)], NONE)
        _fresh_job_id(self)

    def nothing_to_do(self, chain: Chain) -> str | None:
        if len(chain) > 1:
            return None
        return (
            f"Nothing to stream: {chain.active.name} is the only image, so no backing file holds data to copy up. "
            "Take an external snapshot first (blockdev-snapshot-sync), then stream into the new overlay."
        )

    def arguments(self) -> dict:
        arguments = {"device": self.fields["device"].value}
        base = optional(self.fields["base-node"].value)
        if base:
            arguments["base-node"] = base
        return {**arguments, **job_arguments(self.fields)}


class CommitForm(CommandForm):
    """``block-commit``: merge ``top-node`` (and what lies between) down into ``base-node``."""

    commands = ("block-commit",)
    title = "Commit: merge overlays down into a backing file"

    def build_fields(self) -> dict:
        return {
            "device": dropdown("device"),
            "top-node": dropdown("top-node"),
            "base-node": dropdown("base-node"),
            **_job_fields(self.vm),
        }

    def fill(self, chain: Chain) -> None:
        self.offer("device", node_options(chain.images), chain.active.node_name)
        self.offer("top-node", node_options(chain.images[1:]), chain.active.node_name)
        below = chain.below(self.fields["top-node"].value or chain.active.label)
        self.offer("base-node", node_options(below), chain.base.node_name)
        _fresh_job_id(self)

    def nothing_to_do(self, chain: Chain) -> str | None:
        if len(chain) > 1:
            return None
        return (
            f"Nothing to commit: {chain.active.name} is the only image, so no overlay lies above a base to merge "
            "down. Take an external snapshot first (blockdev-snapshot-sync); block-commit can then merge it back."
        )

    def arguments(self) -> dict:
        arguments = {name: self.fields[name].value for name in ("device", "top-node", "base-node")}
        return {**arguments, **job_arguments(self.fields)}


class _CopyForm(CommandForm):
    """Shared by mirror and backup: a source, a sync mode and a target (a new file, or an existing node)."""

    job_type = ""

    def build_fields(self) -> dict:
        return {
            "device": dropdown("device"),
            "sync": dropdown("sync", list(SYNC_MODES[self.job_type])),
            "target": text("target"),
            "target-node": dropdown("target"),
            "format": dropdown("format", [SAME_FORMAT, "qcow2", "raw"]),
            "mode": dropdown("mode", ["absolute-paths", "existing"]),
            **_job_fields(self.vm),
        }

    @property
    def by_file(self) -> bool:
        return self.command.startswith("drive-")

    def fill(self, chain: Chain) -> None:
        self.offer("device", node_options(chain.images), chain.active.node_name)
        others = node_options(chain.other_nodes)
        self.offer("target-node", others or [("no other node: add one with blockdev-add", NONE)], None)
        for name in ("target", "format", "mode"):
            self.fields[name].layout.display = None if self.by_file else "none"
        self.fields["target-node"].layout.display = "none" if self.by_file else None
        if not self.fields["target"].value:
            self.fields["target"].value = fresh_image(self.vm, chain)[0]
        _fresh_job_id(self)

    def after_run(self, result) -> None:
        super().after_run(result)
        self.fields["target"].value = ""

    def target_arguments(self) -> dict:
        if not self.by_file:
            target = optional(self.fields["target-node"].value)
            if target is None:
                raise InputError(
                    f"{self.command} needs a target node",
                    "no node outside the chain exists",
                    "create an image with lab.create() and add it with vm.blockdev_add(...), or use drive-",
                )
            return {"target": target}
        arguments = {"target": self.fields["target"].value.strip()}
        if self.fields["format"].value != SAME_FORMAT:
            arguments["format"] = self.fields["format"].value
        if self.fields["mode"].value != "absolute-paths":
            arguments["mode"] = self.fields["mode"].value
        return arguments

    def arguments(self) -> dict:
        return {
            "device": self.fields["device"].value,
            **self.target_arguments(),
            "sync": self.fields["sync"].value,
            **job_arguments(self.fields),
        }


class MirrorForm(_CopyForm):
    """``drive-mirror`` / ``blockdev-mirror``: keep a target in step with the disk, then pivot or cancel."""

    commands = ("drive-mirror", "blockdev-mirror")
    title = "Mirror: synchronize the running disk to another image"
    job_type = "mirror"

    def build_fields(self) -> dict:
        """Plus ``copy-mode``: ``write-blocking`` makes a mirror under heavy guest writes reach READY."""
        return {**super().build_fields(), "copy-mode": dropdown("copy-mode", ["background", "write-blocking"])}

    def arguments(self) -> dict:
        arguments = super().arguments()
        if self.fields["copy-mode"].value != "background":  # QEMU's default; left out so the line stays the seed's
            arguments["copy-mode"] = self.fields["copy-mode"].value
        return arguments


class BackupForm(_CopyForm):
    """``drive-backup`` / ``blockdev-backup``: a point-in-time copy; ``incremental`` and ``bitmap`` need a bitmap."""

    commands = ("drive-backup", "blockdev-backup")
    title = "Backup: a point-in-time copy of the disk"
    job_type = "backup"

    def build_fields(self) -> dict:
        fields = super().build_fields()
        fields["bitmap"] = dropdown("bitmap")
        return fields

    def fill(self, chain: Chain) -> None:
        super().fill(chain)
        device = chain.find(self.fields["device"].value or chain.active.label)
        bitmaps = [b.name for b in device.bitmaps if b.name] if device else []
        self.offer("bitmap", [NONE, *bitmaps], NONE)

    def arguments(self) -> dict:
        arguments = super().arguments()
        bitmap = optional(self.fields["bitmap"].value)
        if arguments["sync"] in ("incremental", "bitmap") and bitmap is None:
            raise InputError(
                f"{self.command} with sync={arguments['sync']} needs a bitmap",
                "the copy is made of the clusters a dirty bitmap marks",
                "add one with vm.block_dirty_bitmap_add(node=..., name=...) and pick it",
            )
        if bitmap is not None:
            arguments["bitmap"] = bitmap
        return arguments


FORMS = (SnapshotForm, StreamForm, CommitForm, MirrorForm, BackupForm)
