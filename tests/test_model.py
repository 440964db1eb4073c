"""Pure parts: the chain model, argument checks, qmp-shell syntax and sizes, without QEMU."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.model.chain import Chain, retire
from qblocknb.model.checks import check_job
from qblocknb.model.qmpshell import format_line, parse_line
from qblocknb.model.sizes import human_size, parse_size


def node(name: str, file: str, backing: str | None = None, drv: str = "qcow2", **extra) -> dict:
    image = {"virtual-size": 64 << 20, "actual-size": 200704, "filename": file}
    if backing:
        image["full-backing-filename"] = backing
    return {"node-name": name, "file": file, "drv": drv, "ro": backing is None, "image": image, **extra}


NODES = [
    node("node-C", "/lab/c.qcow2", "/lab/b.qcow2"),
    node("#block1", "/lab/c.qcow2", drv="file"),
    node("node-B", "/lab/b.qcow2", "/lab/a.qcow2"),
    node("node-A", "/lab/a.qcow2", dirty_bitmaps=None),
    node("node-E", "/lab/e.qcow2"),
]
BLOCK = [{"device": "", "qdev": "/machine/peripheral/virtio0/virtio-backend", "inserted": {"node-name": "node-C"}}]


def test_chain_from_qmp_follows_backing_files_base_first():
    chain = Chain.from_qmp(BLOCK, NODES, "virtio0")
    assert str(chain) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2]"
    assert chain.node_names == ["node-A", "node-B", "node-C"]
    assert chain.active.device == "virtio0" and chain.base.device is None
    assert [image.node_name for image in chain.other_nodes] == ["node-E"]
    assert [image.label for image in chain.below("node-C")] == ["node-B", "node-A"]
    assert chain.find("b.qcow2").node_name == "node-B"


def test_chain_from_qmp_uses_named_children_when_qemu_gives_them():
    nodes = [dict(NODES[0], children=[{"child": "backing", "node-name": "node-A"}]), *NODES[1:]]
    assert str(Chain.from_qmp(BLOCK, nodes, "virtio0")) == "[a.qcow2] <-- [c.qcow2]"


def test_unknown_device_lists_the_devices():
    with pytest.raises(qb.InputError, match="virtio0"):
        Chain.from_qmp(BLOCK, NODES, "virtio7")


def test_diff_reports_added_removed_and_repointed():
    before = Chain.from_qmp(BLOCK, NODES, "virtio0")
    after_nodes = [node("node-C", "/lab/c.qcow2", "/lab/a.qcow2"), NODES[3]]
    after = Chain.from_qmp(BLOCK, after_nodes, "virtio0")
    change = after.diff(before)
    assert change.removed == ("/lab/b.qcow2",) and change.added == ()
    assert change.repointed == (("/lab/c.qcow2", "/lab/b.qcow2", "/lab/a.qcow2"),)
    assert not change.active_changed and bool(change)
    assert str(change) == "-b.qcow2, c.qcow2: b.qcow2 -> a.qcow2"
    assert not before.diff(before)


def test_retirement_follows_the_seed_rule():
    image = Chain.from_qmp(BLOCK, NODES, "virtio0").images[1]
    assert retire(image, "stream").valid and "still valid" in retire(image, "stream").note
    assert not retire(image, "commit").valid and "invalid" in retire(image, "commit").note


def test_job_annotations_reach_the_images():
    chain = Chain.from_qmp(BLOCK, NODES, "virtio0")
    annotated = chain.with_extras(jobs=(qb.JobInfo("job0", "commit", "running", 1, 2, "node-B", "node-A"),))
    assert [image.jobs for image in annotated.images] == [("job0",), ("job0",), ()]


@pytest.mark.parametrize(
    ("command", "job_type", "arguments", "message"),
    [
        ("block-stream", "stream", {"device": "node-X"}, "node-X"),
        ("block-stream", "stream", {"device": "node-B", "base-node": "node-C"}, "not below"),
        ("block-commit", "commit", {"device": "node-C", "top-node": "node-A"}, "base image"),
        ("block-stream", "stream", {"device": "node-A"}, "no backing file"),
        ("drive-backup", "backup", {"sync": "full", "target": "x"}, "needs a device"),
        (
            "drive-mirror",
            "mirror",
            {"device": "node-C", "sync": "incremental", "target": "x"},
            "not valid for a mirror",
        ),
        ("drive-backup", "backup", {"device": "node-C", "target": "x"}, "needs a sync mode"),
        ("blockdev-backup", "backup", {"device": "node-C", "sync": "full", "target": "node-Q"}, "node-Q"),
        (
            "drive-mirror",
            "mirror",
            {"device": "node-C", "sync": "full", "target": "/nonexistent/dir/e.qcow2"},
            "folder",
        ),
        (
            "drive-mirror",
            "mirror",
            {"device": "node-C", "sync": "top", "target": "/tmp/none.qcow2", "mode": "existing"},
            "existing",
        ),
        ("block-stream", "stream", {"job-id": "job0"}, "already in use"),
    ],
)
def test_checks_name_the_bad_value(command, job_type, arguments, message):
    chain = Chain.from_qmp(BLOCK, NODES, "virtio0")
    with pytest.raises(qb.InputError, match=message):
        check_job(command, job_type, arguments, chain, {"node-A", "node-B", "node-C", "node-E"}, {"job0"}, None)


def test_checks_accept_good_arguments_and_nbd_targets():
    chain = Chain.from_qmp(BLOCK, NODES, "virtio0")
    known = {"node-A", "node-B", "node-C", "node-E"}
    check_job(
        "block-commit", "commit", {"device": "node-C", "top": "b.qcow2", "base": "a.qcow2"}, chain, known, set(), None
    )
    check_job(
        "blockdev-mirror", "mirror", {"device": "node-C", "sync": "full", "target": "node-E"}, chain, known, set(), None
    )
    nbd = {"device": "node-C", "sync": "top", "mode": "existing", "target": "nbd:localhost:10809:exportname=x"}
    check_job("drive-mirror", "mirror", nbd, chain, known, set(), None)


def test_qmp_shell_round_trip():
    arguments = {
        "device": "node-D",
        "job-id": "job0",
        "speed": 1024,
        "auto-dismiss": False,
        "addr": {"type": "inet", "data": {"host": "::", "port": "10809"}},
    }
    line = format_line("block-stream", arguments)
    assert parse_line(line) == ("block-stream", arguments)
    with pytest.raises(qb.InputError, match="twice"):
        parse_line("x a=1 a=2")
    with pytest.raises(qb.InputError, match="not valid JSON"):
        parse_line("x a={bad")


@pytest.mark.parametrize(
    ("text", "value"), [(512, 512), ("64k", 65536), ("4M", 4 << 20), ("1.5G", 3 << 29), ("2MiB", 2 << 20)]
)
def test_sizes(text, value):
    assert parse_size(text) == value


def test_bad_sizes_are_sentences():
    for bad in ("-1", "lots", True, -5, "1.5"):
        with pytest.raises(qb.InputError):
            parse_size(bad)
    assert human_size(512) == "512 B" and human_size(3 << 30) == "3 GiB"


def test_filter_nodes_are_known_targets_but_not_images():
    nodes = [*NODES, node("node-F", "/lab/f.qcow2", drv="blkdebug")]
    chain = Chain.from_qmp(BLOCK, nodes, "virtio0")
    assert chain.filter_nodes == ("node-F",)
    assert "node-F" in chain.known_node_names and chain.find("node-F") is None
    check_job(
        "blockdev-backup",
        "backup",
        {"device": "node-C", "sync": "full", "target": "node-F"},
        chain,
        chain.known_node_names,
        set(),
        None,
    )


def test_json_file_names_show_the_file_inside():
    from qblocknb.model.chain import display_name

    assert display_name('json:{"driver": "nbd", "export": "node-T", "server": {}}') == "node-T (nbd)"
    assert display_name("json:{not json") == "json:{not json"
    assert display_name("/lab/a.qcow2") == "a.qcow2"
