"""The seed's QMP intents as libvirt calls and virsh lines: every mapping and every refusal, then a real QEMU's
history and ``sent(vm)`` showing the lines."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain, Image
from qblocknb.model.virsh import NoLibvirtEquivalent, Notes, translate, virsh_line
from qblocknb.teaching.tutorial import sent

MIB = 1 << 20


def libvirt_chain() -> Chain:
    """[a] <-- [b] <-- [c] as libvirt names it: indexes read from the XML, not depths."""
    files = ("/var/lib/a.qcow2", "/var/lib/b.qcow2", "/var/lib/c.qcow2")
    names = ("vda[3]", "vda[2]", "vda[1]")
    images = [Image(file, "qcow2", 0, node_name=name) for file, name in zip(files, names, strict=True)]
    return Chain(tuple(images), device="vda")


def qmp_chain() -> Chain:
    """The seed's chain on a plain QMP session: node-A .. node-C, a target node-E added outside it."""
    images = tuple(Image(f"/lab/{x}.qcow2", "qcow2", 0, node_name=f"node-{x.upper()}") for x in "abc")
    target = Image("/lab/e.qcow2", "qcow2", 0, node_name="node-E")
    return Chain(images, device="virtio0", other_nodes=(target,))


def refusal(command: str, arguments: dict, chain: Chain | None = None, **more) -> NoLibvirtEquivalent:
    with pytest.raises(NoLibvirtEquivalent) as caught:
        translate(command, arguments, chain or libvirt_chain(), **more)
    return caught.value


# -- snapshot ---------------------------------------------------------------------------------------------
def test_snapshot_of_the_active_layer():
    call = translate(
        "blockdev-snapshot-sync",
        {"node-name": "vda[1]", "snapshot-file": "/var/lib/d.qcow2", "snapshot-node-name": "x", "format": "qcow2"},
        libvirt_chain(),
        "web",
    )
    assert call.method == "snapshotCreateXML"
    assert call.args == (
        "<domainsnapshot><disks><disk name='vda' snapshot='external'><driver type='qcow2'/>"
        "<source file='/var/lib/d.qcow2'/></disk></disks></domainsnapshot>",
    )
    assert call.flags == (
        "VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY",
        "VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA",
        "VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC",
    )
    assert call.line() == (
        "virsh snapshot-create-as web --disk-only --no-metadata --atomic "
        "--diskspec vda,snapshot=external,driver=qcow2,file=/var/lib/d.qcow2"
    )


def test_snapshot_reusing_a_file_named_by_device_escapes_it():
    arguments = {"device": "virtio0", "snapshot-file": "/lab/it's a&b,c.qcow2", "mode": "existing"}
    call = translate("blockdev-snapshot-sync", arguments, qmp_chain())
    assert call.flags[-1] == "VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT"
    assert ET.fromstring(call.args[0]).find("disks/disk/source").get("file") == "/lab/it's a&b,c.qcow2"
    assert call.line().endswith(
        "--reuse-external --diskspec 'vda,snapshot=external,driver=qcow2,file=/lab/it'\"'\"'s a&b,,c.qcow2'"
    )


def test_snapshot_below_the_top_is_refused():
    error = refusal("blockdev-snapshot-sync", {"node-name": "vda[2]", "snapshot-file": "/x.qcow2"})
    assert "libvirt cannot snapshot a layer below the top (vda[2])" in str(error)
    assert "passthrough=True" in str(error)


# -- stream and commit ------------------------------------------------------------------------------------
def test_stream_into_the_top_with_a_base_and_speed():
    arguments = {"device": "vda[1]", "base-node": "vda[3]", "speed": MIB, "job-id": "job0"}
    call = translate("block-stream", arguments, libvirt_chain(), "web")
    assert (call.method, call.args, call.flags) == (
        "blockRebase",
        ("vda", "vda[3]", MIB),
        ("VIR_DOMAIN_BLOCK_REBASE_BANDWIDTH_BYTES",),
    )
    assert call.line() == "virsh blockpull web vda --base 'vda[3]' --bandwidth 1048576 --bytes --wait --verbose"


def test_stream_on_qmp_names_layers_by_file():
    call = translate("block-stream", {"device": "node-C", "base": "a.qcow2"}, qmp_chain())
    assert (call.args, call.flags) == (("vda", "/lab/a.qcow2", 0), ())
    assert virsh_line("block-stream", {"device": "virtio0"}, qmp_chain()) == "virsh blockpull DOM vda --wait --verbose"


def test_stream_into_an_intermediate_image_is_refused():
    error = refusal("block-stream", {"device": "node-B", "base-node": "node-A"}, qmp_chain())
    assert error.cannot == "stream into an intermediate image (node-B)"
    assert "stream into the top (vda) then" in str(error)
    assert virsh_line("block-stream", {"device": "node-B"}, qmp_chain()) == (
        "# libvirt cannot: stream into an intermediate image (node-B) (it pulls data only into the disk's active layer)"
    )


def test_active_commit():
    arguments = {"device": "vda", "top-node": "vda[1]", "base-node": "vda[3]"}
    call = translate("block-commit", arguments, libvirt_chain())
    assert (call.method, call.args, call.flags) == (
        "blockCommit",
        ("vda", "vda[3]", None, 0),
        ("VIR_DOMAIN_BLOCK_COMMIT_ACTIVE",),
    )
    assert call.line() == "virsh blockcommit DOM vda --base 'vda[3]' --active --wait --verbose"
    assert translate("block-commit", {"device": "vda"}, libvirt_chain()).args == ("vda", None, None, 0)


def test_intermediate_commit_with_speed():
    arguments = {"device": "node-C", "top": "/lab/b.qcow2", "base-node": "node-A", "speed": 2 * MIB}
    call = translate("block-commit", arguments, qmp_chain())
    assert call.args == ("vda", "/lab/a.qcow2", "/lab/b.qcow2", 2 * MIB)
    assert call.flags == ("VIR_DOMAIN_BLOCK_COMMIT_BANDWIDTH_BYTES",)
    assert call.line() == (
        "virsh blockcommit DOM vda --top /lab/b.qcow2 --base /lab/a.qcow2 --bandwidth 2097152 --bytes --wait --verbose"
    )


def test_a_layer_outside_the_chain_is_an_input_error():
    with pytest.raises(InputError, match="base-node 'node-X' is not in the chain"):
        translate("block-stream", {"device": "node-C", "base-node": "node-X"}, qmp_chain())


# -- mirror -----------------------------------------------------------------------------------------------
def test_drive_mirror_full_with_its_parameters():
    arguments = {"device": "vda", "target": "/b/copy.img", "sync": "full", "format": "raw", "speed": MIB}
    call = translate("drive-mirror", {**arguments, "granularity": 65536, "buf-size": MIB}, libvirt_chain())
    assert call.method == "blockCopy"
    assert call.args == (
        "vda",
        "<disk type='file'><source file='/b/copy.img'/><driver type='raw'/></disk>",
        {"bandwidth": MIB, "granularity": 65536, "buf-size": MIB},
    )
    assert call.flags == ("VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB",)
    assert call.line() == (
        "virsh blockcopy DOM vda --dest /b/copy.img --format raw --transient-job --bandwidth 1048576 --bytes "
        "--granularity 65536 --buf-size 1048576 --wait --verbose"
    )


def test_drive_mirror_top_onto_an_existing_file_keeps_the_source_format():
    arguments = {"device": "node-C", "target": "/lab/e.qcow2", "sync": "top", "mode": "existing"}
    call = translate("drive-mirror", arguments, qmp_chain())
    assert call.args[1:] == ("<disk type='file'><source file='/lab/e.qcow2'/><driver type='qcow2'/></disk>", {})
    assert call.flags == (
        "VIR_DOMAIN_BLOCK_COPY_SHALLOW",
        "VIR_DOMAIN_BLOCK_COPY_REUSE_EXT",
        "VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB",
    )
    assert "--shallow --reuse-external --transient-job --wait" in call.line()


@pytest.mark.parametrize(
    "added",
    [
        {"node-E": {"driver": "raw", "node-name": "node-E", "file": {"driver": "file", "filename": "/t/e.img"}}},
        {
            "node-E": {"driver": "raw", "node-name": "node-E", "file": "f"},
            "f": {"driver": "file", "filename": "/t/e.img"},
        },
        {"node-E": {"driver": "file", "node-name": "node-E", "filename": "/t/e.img"}},
    ],
    ids=["nested file", "file node by name", "a file node itself"],
)
def test_blockdev_mirror_finds_its_target_among_added_nodes(added):
    call = translate(
        "blockdev-mirror", {"device": "vda", "target": "node-E", "sync": "full"}, libvirt_chain(), added=added
    )
    assert call.args[1] == "<disk type='file'><source file='/t/e.img'/><driver type='raw'/></disk>"
    assert "VIR_DOMAIN_BLOCK_COPY_REUSE_EXT" in call.flags


def test_blockdev_mirror_target_from_the_chain_or_refused():
    call = translate("blockdev-mirror", {"device": "node-C", "target": "node-E", "sync": "full"}, qmp_chain())
    assert "--dest /lab/e.qcow2 --format qcow2 --reuse-external" in call.line()
    with pytest.raises(InputError, match="target node 'node-Z' is not known"):
        translate("blockdev-mirror", {"device": "node-C", "target": "node-Z", "sync": "full"}, qmp_chain())


@pytest.mark.parametrize("sync", ["none", "bitmap"])
def test_mirror_sync_none_or_bitmap_is_refused(sync):
    error = refusal("drive-mirror", {"device": "vda", "target": "/x.qcow2", "sync": sync})
    assert error.cannot == f"mirror with sync={sync}" and "use top" in str(error)


def test_mirror_of_an_intermediate_image_or_to_nbd_is_refused():
    assert (
        "copy an intermediate image"
        in refusal("drive-mirror", {"device": "vda[2]", "target": "/x", "sync": "full"}).cannot
    )
    error = refusal("drive-mirror", {"device": "vda", "target": "nbd:10.0.0.2:10809:exportname=vda", "sync": "top"})
    assert "virsh migrate --copy-storage-all" in str(error)


# -- backup and checkpoints -------------------------------------------------------------------------------
def test_full_drive_backup():
    arguments = {"device": "vda", "target": "/b/full.qcow2", "sync": "full", "format": "qcow2", "speed": MIB}
    call = translate("drive-backup", arguments, libvirt_chain(), "web")
    backupxml = (
        "<domainbackup mode='push'><disks><disk name='vda' type='file'><target file='/b/full.qcow2'/>"
        "<driver type='qcow2'/></disk></disks></domainbackup>"
    )
    assert (call.method, call.args, call.flags) == ("backupBegin", (backupxml, None), ())
    assert call.line() == f'virsh backup-begin web --backupxml <(echo "{backupxml}")'


def test_blockdev_backup_onto_an_added_node_reuses_it():
    added = {"t": {"driver": "qcow2", "node-name": "t", "file": {"driver": "file", "filename": "/b/$t.qcow2"}}}
    call = translate("blockdev-backup", {"device": "vda", "target": "t", "sync": "full"}, libvirt_chain(), added=added)
    assert call.flags == ("VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL",)
    assert "<target file='/b/$t.qcow2'/>" in call.args[0]
    assert "<target file='/b/\\$t.qcow2'/>" in call.line() and call.line().endswith('") --reuse-external')


def test_incremental_backups_follow_the_checkpoints_they_create():
    notes, chain = Notes(), libvirt_chain()
    bitmap = translate("block-dirty-bitmap-add", {"node": "vda[1]", "name": "b0"}, chain)
    assert (bitmap.method, bitmap.flags) == ("checkpointCreateXML", ())
    assert bitmap.args == (
        "<domaincheckpoint><name>b0</name><disks><disk name='vda' checkpoint='bitmap' bitmap='b0'/></disks>"
        "</domaincheckpoint>",
    )
    assert bitmap.line() == "virsh checkpoint-create-as DOM b0 --diskspec vda,checkpoint=bitmap,bitmap=b0"
    notes.remember("block-dirty-bitmap-add", {}, bitmap)
    seen = []
    for number in (1, 2):
        arguments = {"device": "vda", "target": f"/b/inc{number}.qcow2", "sync": "incremental", "bitmap": "b0"}
        call = translate("drive-backup", arguments, chain, checkpoints=notes.checkpoints)
        notes.remember("drive-backup", arguments, call)
        backup, checkpoint = (ET.fromstring(xml) for xml in call.args)
        seen.append((backup.findtext("incremental"), checkpoint.findtext("name"), call.checkpoint))
    assert seen == [("b0", "b0.1", ("b0", "b0.1")), ("b0.1", "b0.2", ("b0", "b0.2"))]
    assert '--checkpointxml <(echo "<domaincheckpoint><name>b0.2</name>' in call.line()


def test_a_bitmap_add_with_a_full_backup_is_one_backup_begin():
    actions = [
        {"type": "block-dirty-bitmap-add", "data": {"node": "node-C", "name": "bitmap0", "persistent": True}},
        {"type": "blockdev-backup", "data": {"device": "node-C", "target": "node-E", "sync": "full", "job-id": "j"}},
    ]
    call = translate("transaction", {"actions": actions}, qmp_chain())
    assert call.method == "backupBegin" and call.checkpoint == ("bitmap0", "bitmap0")
    assert ET.fromstring(call.args[0]).find("incremental") is None
    assert ET.fromstring(call.args[1]).findtext("name") == "bitmap0"
    assert call.flags == ("VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL",)


@pytest.mark.parametrize(
    "actions",
    [
        [{"type": "blockdev-snapshot-sync", "data": {"node-name": "node-C", "snapshot-file": "d.qcow2"}}],
        [
            {"type": "block-dirty-bitmap-add", "data": {"node": "node-C", "name": "b1"}},
            {
                "type": "drive-backup",
                "data": {"device": "node-C", "target": "/x", "sync": "incremental", "bitmap": "b"},
            },
        ],
    ],
    ids=["a snapshot", "an incremental"],
)
def test_other_transactions_are_refused(actions):
    error = refusal("transaction", {"actions": actions}, qmp_chain())
    assert str(error).startswith("libvirt cannot run a transaction of ") and "one by one" in str(error)


@pytest.mark.parametrize("sync", ["top", "none"])
def test_backup_sync_top_or_none_is_refused(sync):
    error = refusal("drive-backup", {"device": "vda", "target": "/x.qcow2", "sync": sync})
    assert error.cannot == f"back up with sync={sync}" and "use sync=full" in str(error)


# -- job verbs and queries --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "job_type", "method", "flags", "line"),
    [
        ("block-job-complete", "", "blockJobAbort", ("VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT",), "blockjob D vda --pivot"),
        ("job-complete", "mirror", "blockJobAbort", ("VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT",), "blockjob D vda --pivot"),
        ("block-job-cancel", "commit", "blockJobAbort", (), "blockjob D vda --abort"),
        ("job-cancel", "", "blockJobAbort", (), "blockjob D vda --abort"),
        ("block-job-cancel", "backup", "abortJobFlags", (), "domjobabort D"),
    ],
)
def test_job_verbs(command, job_type, method, flags, line):
    call = translate(command, {"device": "job0", "id": "job0"}, Chain(()), "D", job_type=job_type)
    assert (call.method, call.flags, call.line()) == (method, flags, f"virsh {line}")
    assert call.args == (() if method == "abortJobFlags" else ("vda",))


def test_set_speed_and_its_refusal_for_a_backup():
    call = translate("block-job-set-speed", {"device": "job0", "speed": MIB}, Chain(()), disk="sdb")
    assert (call.method, call.args, call.flags) == (
        "blockJobSetSpeed",
        ("sdb", MIB),
        ("VIR_DOMAIN_BLOCK_JOB_SPEED_BANDWIDTH_BYTES",),
    )
    assert call.line() == "virsh blockjob DOM sdb --bandwidth 1048576 --bytes"
    assert "no bandwidth setting" in str(refusal("block-job-set-speed", {"speed": 1}, job_type="backup"))


@pytest.mark.parametrize("verb", ["pause", "resume", "finalize", "dismiss"])
def test_verbs_libvirt_has_not_are_refused(verb):
    for prefix in ("block-job", "job"):
        assert virsh_line(f"{prefix}-{verb}", {"device": "job0"}, Chain(())).startswith("# libvirt cannot: ")
    assert "passthrough=True" in str(refusal(f"job-{verb}", {"id": "job0"}))


def test_queries_blockdev_add_and_other_commands():
    lines = {
        command: virsh_line(command, {}, Chain(()), "web", "vdb")
        for command in ("query-block-jobs", "query-block", "query-named-block-nodes", "query-status")
    }
    assert lines == {
        "query-block-jobs": "virsh blockjob web vdb --info",
        "query-block": "virsh domblklist web --details",
        "query-named-block-nodes": "virsh dumpxml web",
        "query-status": "virsh domstate web --reason",
    }
    assert translate("blockdev-add", {"driver": "qcow2", "node-name": "n"}, Chain(())).method == ""
    assert virsh_line("blockdev-add", {"driver": "qcow2", "node-name": "n"}, Chain(())) == ""
    assert virsh_line("human-monitor-command", {"command-line": "info block"}, Chain(())) == ""
    assert "use QMP for it" in str(refusal("nbd-server-start", {}))


def test_every_method_and_flag_exists_in_libvirt_python():
    libvirt = pytest.importorskip("libvirt")
    chain, added = libvirt_chain(), {"t": {"driver": "file", "node-name": "t", "filename": "/t"}}
    calls = [
        translate("blockdev-snapshot-sync", {"device": "vda", "snapshot-file": "/d", "mode": "existing"}, chain),
        translate("block-stream", {"device": "vda", "speed": 1}, chain),
        translate("block-commit", {"device": "vda", "speed": 1}, chain),
        translate("drive-mirror", {"device": "vda", "target": "/m", "sync": "top", "mode": "existing"}, chain),
        translate("blockdev-backup", {"device": "vda", "target": "t", "sync": "full"}, chain, added=added),
        translate("block-dirty-bitmap-add", {"node": "vda", "name": "b"}, chain),
        translate("block-job-complete", {"device": "j"}, chain),
        translate("block-job-cancel", {"device": "j"}, chain, job_type="backup"),
        translate("block-job-set-speed", {"device": "j", "speed": 1}, chain),
    ]
    for call in calls:
        assert callable(getattr(libvirt.virDomain, call.method)), call.method
        assert all(isinstance(getattr(libvirt, flag), int) for flag in call.flags), call.flags


# -- on a real QEMU ---------------------------------------------------------------------------------------
def test_history_and_sent_show_virsh_lines(seed_vm, capsys):
    seed_vm.blockdev_snapshot_sync(node_name="node-D", snapshot_file="e.qcow2", snapshot_node_name="node-E")
    seed_vm.block_stream(device="node-E", base_node="node-C", job_id="job0").wait(timeout=60)
    sent(seed_vm, "block-stream")
    job = seed_vm.block_commit(device="node-E", top_node="node-E", base_node="node-C", job_id="job1")
    job.wait_ready(timeout=60).complete()
    job.wait(timeout=60)
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2]"

    history = seed_vm.history
    lines = dict(zip(history.command, history.virsh, strict=True))
    c_file = seed_vm.chain().active.file
    assert lines["blockdev-snapshot-sync"] == (
        "virsh snapshot-create-as DOM --disk-only --no-metadata --atomic "
        "--diskspec vda,snapshot=external,driver=qcow2,file=e.qcow2"
    )
    assert lines["block-stream"] == f"virsh blockpull DOM vda --base {c_file} --wait --verbose"
    assert lines["block-commit"] == f"virsh blockcommit DOM vda --base {c_file} --active --wait --verbose"
    complete = "job-complete" if "job-complete" in lines else "block-job-complete"  # the former from QEMU 10.1
    assert lines[complete] == "virsh blockjob DOM vda --pivot"
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [
        "(QEMU) block-stream device=node-E base-node=node-C job-id=job0",
        f"(virsh) virsh blockpull DOM vda --base {c_file} --wait --verbose",
    ]


def test_forms_and_plans_show_virsh_lines(seed_vm):
    from html import unescape

    import qblocknb as qb
    from qblocknb.widgets.forms import StreamForm

    form = StreamForm(seed_vm)
    assert "(virsh) virsh blockpull DOM vda --wait --verbose" in unescape(form.command_view.value)
    plan = qb.plan(seed_vm, "[a.qcow2] <-- [d.qcow2]")
    a_file = seed_vm.chain().base.file
    assert plan.virsh_lines() == (f"virsh blockpull DOM vda --base {a_file} --wait --verbose",)
    assert f"     virsh blockpull DOM vda --base {a_file} --wait --verbose" in str(plan).splitlines()
