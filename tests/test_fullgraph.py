"""The full block graph: filter nodes of running jobs, protocol nodes, exports, permissions, and its fallback."""

from __future__ import annotations

import pytest

import qblocknb as qb
from qblocknb.live import images
from qblocknb.live.graphreader import read_block_graph
from qblocknb.model.blockgraph import DEBUG_SOURCE, NAMED_SOURCE, BlockGraph
from qblocknb.model.permissions import conflict_todo, permission_conflict
from qblocknb.render import graph_text, render, svg
from qblocknb.render.fullgraph import LEGEND, abbreviate
from qblocknb.teaching.seedchain import expected_view

SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
CRAWL = 1  # bytes per second: a job this slow is still running when the graph is read


def add_target(vm: qb.Machine, lab: qb.Lab, name: str) -> None:
    lab.create(f"{name}.qcow2", size="64M")
    vm.blockdev_add(driver="qcow2", node_name=name, file={"driver": "file", "filename": f"{name}.qcow2"})


def in_svg(text: str) -> str:
    """``text`` as graphviz writes it in SVG (``-`` as ``&#45;``)."""
    return text.replace("-", "&#45;")


def filters(graph: BlockGraph) -> dict[str, str]:
    """Filter node name -> its driver."""
    return {node.name: node.driver for node in graph.of_kind("filter")}


def assert_chain_drawn_with_protocols(graph: BlockGraph) -> None:
    """Each seed image is a qcow2 node over a file node, and an overlay uses the one below as 'backing'."""
    for letter in "ABCD":
        node = f"node-{letter}"
        assert graph.node(node).kind == "format"
        files = [graph.node(child) for child in graph.children(node) if graph.edge(node, child).role == "file"]
        assert [(f.kind, f.driver) for f in files] == [("protocol", "file")]
        assert files[0].file.endswith(f"{letter.lower()}.qcow2")
    for below, above in ("AB", "BC", "CD"):
        edge = graph.edge(f"node-{above}", f"node-{below}")
        assert edge.role == "backing" and edge.perm == ("consistent-read",)


def test_a_running_backup_shows_its_copy_before_write_filter_and_the_job_holding_it(seed_vm, lab):
    add_target(seed_vm, lab, "target")
    job = seed_vm.blockdev_backup(device="node-D", target="target", sync="full", job_id="bk", speed=CRAWL)
    graph = read_block_graph(seed_vm)
    assert graph.source == DEBUG_SOURCE
    (cbw,) = [name for name, driver in filters(graph).items() if driver == "copy-before-write"]
    assert graph.edge("virtio0", cbw).role == "root", "the guest now writes through the filter"
    assert graph.edge(cbw, "node-D").role == "file" and graph.edge(cbw, "target").role == "target"
    assert graph.node("bk").kind == "job" and graph.node("bk").driver == "backup"
    assert sorted(graph.children("bk")) == sorted([cbw, "target"])
    assert "write" in graph.edge(cbw, "target").perm
    assert_chain_drawn_with_protocols(graph)

    drawing = svg(graph)
    assert in_svg("copy-before-write") in drawing and f'id="filter:{cbw}"' in drawing
    assert 'id="job:bk"' in drawing and in_svg('id="protocol:file-node-A"') in drawing
    assert "RW | RU" in drawing, "the filter takes write and consistent-read on node-D and shares both reads"
    assert in_svg("consistent-read") in drawing, "the legend spells out the letters"

    job.set_speed(0)
    assert job.wait(timeout=60).outcome == "completed"
    assert filters(read_block_graph(seed_vm)) == {}, "the filter leaves with the job"
    assert str(seed_vm.chain()) == SEED
    assert seed_vm.verify(expected_view("ABCD"), image="target.qcow2")
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_running_mirror_shows_its_mirror_top_filter(seed_vm, lab):
    add_target(seed_vm, lab, "copy")
    job = seed_vm.blockdev_mirror(device="node-D", target="copy", sync="full", job_id="mj", speed=CRAWL)
    graph = read_block_graph(seed_vm)
    (top,) = [name for name, driver in filters(graph).items() if driver == "mirror_top"]
    assert graph.edge("virtio0", top).role == "root"
    assert graph.edge(top, "node-D").role == "backing"
    assert set(graph.children("mj")) >= {top, "copy"}
    assert 'id="filter:' in svg(graph) and "mirror_top" in svg(graph)

    job.set_speed(0)
    job.wait_ready(timeout=60)
    job.complete()
    assert job.wait(timeout=60).outcome == "completed"
    assert str(seed_vm.chain()) == "[copy.qcow2]"
    assert filters(read_block_graph(seed_vm)) == {}
    assert seed_vm.verify(expected_view("ABCD"))


def test_a_running_commit_shows_its_commit_top_filter(seed_vm, lab):
    job = seed_vm.block_commit(device="node-D", top_node="node-C", base_node="node-B", job_id="cj", speed=CRAWL)
    graph = read_block_graph(seed_vm)
    (top,) = [name for name, driver in filters(graph).items() if driver == "commit_top"]
    assert graph.edge("node-D", top).role == "backing", "the overlay now reads through the filter"
    assert graph.edge(top, "node-C").role == "backing"
    assert {"node-C", "node-B"} <= set(graph.children("cj")), "the job holds the nodes it commits"

    job.set_speed(0)
    assert job.wait(timeout=60).outcome == "completed"
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]"
    assert filters(read_block_graph(seed_vm)) == {}
    assert seed_vm.verify(expected_view("ABCD"))
    assert lab.runs_match("b.qcow2", expected_view("ABC")), "B now holds C's data"


def test_an_nbd_export_is_drawn_over_the_node_it_exports(seed_vm, lab):
    seed_vm.nbd_server_start(addr={"type": "unix", "data": {"path": str(lab.path / "nbd.sock")}})
    seed_vm.block_export_add(type="nbd", id="exp0", node_name="node-C", writable=False)
    graph = read_block_graph(seed_vm)
    assert graph.node("exp0").kind == "export" and graph.node("exp0").driver == "nbd"
    assert graph.edge("exp0", "node-C").role == "root"
    assert graph.edge("exp0", "node-C").perm == ("consistent-read",)
    assert 'id="export:exp0"' in svg(graph)
    uri = f"nbd+unix:///node-C?socket={lab.path / 'nbd.sock'}"
    assert images.runs_match(uri, expected_view("ABC"), fmt="raw"), "the export serves node-C's point in time"

    seed_vm.block_export_del(id="exp0")
    seed_vm.nbd_server_stop()
    assert read_block_graph(seed_vm).of_kind("export") == []
    assert str(seed_vm.chain()) == SEED


def test_a_throttle_filter_is_drawn_over_the_node_it_throttles(seed_vm):
    seed_vm.object_add(qom_type="throttle-group", id="tg0", limits={"iops-total": 1000})
    seed_vm.blockdev_add(driver="throttle", node_name="thr0", throttle_group="tg0", file="node-A", read_only=True)
    graph = seed_vm.block_graph()
    assert filters(graph)["thr0"] == "throttle"
    edge = graph.edge("thr0", "node-A")
    assert edge.role == "file" and "write" in edge.shared, "a read-only throttle lets node-B's chain go on"
    assert 'id="filter:thr0"' in svg(graph)
    assert images.runs_match(f"{seed_vm.cwd}/a.qcow2", expected_view("A"), fmt="qcow2"), "base data unchanged"
    assert str(seed_vm.chain()) == SEED, "a filter on the side is not part of the chain"


def test_the_fallback_from_named_nodes_says_what_it_does_not_know(seed_vm, lab):
    add_target(seed_vm, lab, "target")
    job = seed_vm.blockdev_backup(device="node-D", target="target", sync="full", job_id="bk", speed=CRAWL)
    graph = read_block_graph(seed_vm, source=NAMED_SOURCE)
    assert graph.source == NAMED_SOURCE and not graph.permissions_known
    assert all(edge.perm is None for edge in graph.edges)
    (cbw,) = [name for name, driver in filters(graph).items() if driver == "copy-before-write"]
    assert graph.edge("virtio0", cbw) is not None and graph.edge(cbw, "node-D") is not None
    assert graph.edge("node-D", "node-C").role == "backing"
    assert sorted(graph.children("bk")) == ["node-D", "target"], "what the toolkit knows the job holds"
    drawing = svg(graph)
    assert in_svg("from query-named-block-nodes") in drawing and "permissions unknown" in drawing
    assert in_svg("from x-debug") not in drawing

    job.set_speed(0)
    assert job.wait(timeout=60).outcome == "completed"
    assert seed_vm.verify(expected_view("ABCD"), image="target.qcow2")
    assert str(seed_vm.chain()) == SEED


def test_a_permission_conflict_names_an_edge_of_the_full_graph(seed_vm):
    # A backup into node-B wants to write a node that node-C reads as its backing file, unshared.
    with pytest.raises(qb.CommandError) as refused:
        seed_vm.send("blockdev-backup", {"device": "node-D", "target": "node-B", "sync": "full", "job-id": "bad"})
    conflict = permission_conflict(refused.value.desc)
    assert str(refused.value).endswith(f"; {conflict.todo()}."), "the refusal itself points at the edge"
    assert (conflict.holder, conflict.node, conflict.role, conflict.perms) == (
        "node-C",
        "node-B",
        "backing",
        ("write",),
    )
    graph = read_block_graph(seed_vm)
    edge = graph.edge(conflict.holder, conflict.node)
    assert edge.role == conflict.role and "write" not in edge.shared, "the diagram shows the refusal"
    assert "the edge from node-C to node-B ('backing')" in conflict.todo()
    drawn = render(graph, conflict=conflict).source
    marked = [line for line in drawn.splitlines() if "penwidth=2.5" in line]
    assert len(marked) == 1 and 'id="edge:node-C->node-B"' in marked[0]
    assert str(seed_vm.chain()) == SEED and seed_vm.query_block_jobs() == []
    assert seed_vm.verify(expected_view("ABCD"))


def test_render_full_asks_what_can_answer_and_refuses_a_chain(seed_vm):
    chain = seed_vm.chain()
    with pytest.raises(qb.InputError, match="pass the Machine itself"):
        qb.render(chain, full=True)
    graph = qb.render(seed_vm, full=True)
    assert 'id="protocol:file-node-A"' in graph.source and "x-debug-query-block-graph" in graph.source
    assert qb.render(chain).name == "chain", "the seed-style chain stays the default"


def test_the_chain_view_toggles_the_full_graph(seed_vm):
    from qblocknb.widgets.chainview import ChainView

    view = ChainView(seed_vm)
    try:
        assert view.graph is None and in_svg('id="image:node-D"') in view.svg
        view.full.value = True
        assert (
            view.graph is not None
            and in_svg('id="protocol:file-node-A"') in view.svg
            and in_svg(LEGEND[:20]) in view.svg
        )
        view.full.value = False
        assert view.graph is None and in_svg('id="image:node-D"') in view.svg
    finally:
        view.close()
    assert seed_vm.verify(expected_view("ABCD"))


def test_the_older_conflict_wording_and_unknown_text():
    old = "Conflicts with use by node 'node-C' as 'backing', which does not allow 'write' on node-B"
    conflict = permission_conflict(old)
    assert (conflict.holder, conflict.node, conflict.role, conflict.perms) == (
        "node-C",
        "node-B",
        "backing",
        ("write",),
    )
    assert permission_conflict("Node 'node-D' is busy: block device is in use by block job: stream") is None
    assert conflict_todo(old) == conflict.todo() and conflict_todo("Node 'node-D' is busy") == ""


def test_named_nodes_with_a_children_list_keep_their_roles():
    nodes = [
        {"node-name": "top", "drv": "qcow2", "file": "b.qcow2", "children": [{"child": "backing", "node-name": "low"}]},
        {"node-name": "low", "drv": "qcow2", "file": "a.qcow2", "children": []},
    ]
    graph = BlockGraph.from_named_nodes(nodes, blocks=[])
    assert graph.edge("top", "low").role == "backing" and graph.edge("top", "low").perm is None
    assert "top -[backing]-> low" in graph_text(graph)
    assert abbreviate(("write", "consistent-read")) == "RW" and abbreviate(()) == "-" and abbreviate(None) == "?"
