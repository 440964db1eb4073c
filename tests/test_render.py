"""The chain diagram: hand-built chains for every element, then real chains from QEMU."""

from __future__ import annotations

import re
from dataclasses import astuple, replace
from html import unescape

import pytest

import qblocknb as qb
from qblocknb.migration.flow import StorageMigration, launch_destination
from qblocknb.model.chain import Bitmap, Chain, ExportInfo, FilterInfo, Image, JobInfo, RetiredImage
from qblocknb.model.jobfaults import FaultedJobInfo
from qblocknb.model.palette import ERROR
from qblocknb.model.predict import PREVIEW_STATUS
from qblocknb.render import dot_available, png, render, save, style, svg, text
from qblocknb.teaching.seedchain import expected_view

MiB = 1 << 20


def image(letter: str, below: str | None = None, **extra) -> Image:
    return Image(
        f"{letter}.qcow2",
        "qcow2",
        64 * MiB,
        (ord(letter) - 96) * MiB,
        node_name=f"node-{letter.upper()}",
        backing_file=f"{below}.qcow2" if below else None,
        **extra,
    )


def seed_chain(**extra) -> Chain:
    images = (image("a"), image("b", "a"), image("c", "b"), image("d", "c", device="virtio0"))
    return Chain(images, device="virtio0", **extra)


def svg_of(chain: Chain, **options) -> str:
    """The SVG with graphviz's entities undone (it writes ``-`` as ``&#45;``)."""
    return unescape(svg(chain, **options))


def element(document: str, element_id: str) -> str:
    """The ``<g id=...>`` group of one node or edge."""
    match = re.search(rf'<g id="{re.escape(element_id)}" class="(?:node|edge)">(.*?)</g>', document, re.S)
    assert match, f"no element {element_id} in the SVG"
    return match.group(1)


def x_of(document: str, element_id: str) -> float:
    """The x of an element's first text: its centre."""
    return float(re.search(r'<text[^>]* x="([\d.-]+)"', element(document, element_id)).group(1))


def xs_of(points: str) -> list[float]:
    return [float(point.split(",")[0]) for point in points.split()]


def right_edge(document: str, element_id: str) -> float:
    return max(xs_of(re.search(r'<path[^>]* d="M([^"]*)"', element(document, element_id)).group(1).replace("C", " ")))


def arrowhead_x(edge: str) -> float:
    """Where an edge's arrowhead points: the x of its polygon's tip nearest the backing file."""
    return min(xs_of(re.search(r'<polygon[^>]* points="([^"]*)"', edge).group(1)))


# -- hand-built chains --------------------------------------------------------------------------
def test_labels_name_each_image_by_file_node_format_and_sizes():
    picture = svg_of(seed_chain())
    b = element(picture, "image:node-B")
    for line in ("b.qcow2", "node-B · qcow2", "64 MiB virtual", "2 MiB allocated"):
        assert line in b
    assert "node&#45;B" in svg(seed_chain())  # graphviz's own escaping of '-'


def test_images_go_left_to_right_base_first_with_arrows_from_overlay_to_backing():
    chain = seed_chain()
    picture = svg_of(chain)
    xs = [x_of(picture, f"image:node-{letter}") for letter in "ABCD"]
    assert xs == sorted(xs)
    for below, above in ("AB", "BC", "CD"):  # [A] <-- [B]: the arrowhead touches the backing file
        head = arrowhead_x(element(picture, f"backing:node-{above}"))
        assert abs(head - right_edge(picture, f"image:node-{below}")) < 12
    assert text(chain).splitlines()[0] == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"


# A notebook cell of a 1200 px wide window is about 1,040 px wide, 780 pt: Jupyter shows the SVG at its own size.
CELL_PT = 780


def size_pt(document: str) -> tuple[int, int]:
    """The width and height graphviz gives the drawing, in points."""
    width, height = re.match(r'<svg width="(\d+)pt" height="(\d+)pt"', document).groups()
    return int(width), int(height)


def long_chain(length: int) -> Chain:
    letters = "abcdefghijklmnopqrstuvwxyz"[:length]
    images = [image(letter, letters[k - 1] if k else None) for k, letter in enumerate(letters)]
    images[-1] = replace(images[-1], device="virtio0")
    return Chain(tuple(images), device="virtio0")


def test_the_seeds_chain_fits_a_notebook_cell_at_its_own_size():
    width, height = size_pt(svg(seed_chain()))
    assert width < CELL_PT and height < 100, "one row of four images and the device"


def test_a_long_chain_wraps_into_rows_of_four_that_read_like_text():
    picture = svg_of(long_chain(12))
    width, height = size_pt(picture)
    assert width < CELL_PT and height > 3 * 60, "three rows, no wider than the seed's one"
    ys = {
        letter: float(re.search(r'<text[^>]* y="([\d.-]+)"', element(picture, f"image:node-{letter}")).group(1))
        for letter in "ABCDEFGHIJKL"
    }
    for row in ("ABCD", "EFGH", "IJKL"):
        xs = [x_of(picture, f"image:node-{letter}") for letter in row]
        line = [ys[letter] for letter in row]
        assert xs == sorted(xs) and max(line) - min(line) < 5, f"{row}: left to right, on one line"
    assert ys["A"] < ys["E"] < ys["I"], "rows go down"
    assert abs(x_of(picture, "image:node-E") - x_of(picture, "image:node-A")) < 5, "each row starts on the left"
    assert "<title>n3->n4</title>" in element(picture, "backing:node-E"), "E's backing arrow still reaches D"


def test_the_active_layer_is_marked_with_its_device():
    picture = svg_of(seed_chain())
    assert "active layer · virtio0" in element(picture, "image:node-D")
    assert "active layer" not in element(picture, "image:node-C")
    assert "virtio0" in element(picture, "device:virtio0")
    assert x_of(picture, "device:virtio0") > x_of(picture, "image:node-D")
    assert f'stroke="{style.ACTIVE_BORDER}"' in element(picture, "image:node-D")


def test_dirty_bitmaps_are_badges_on_their_node():
    chain = seed_chain()
    marked = replace(chain.active, bitmaps=(Bitmap("bm0", 65536, 3 * 65536), Bitmap("bm1", 65536, recording=False)))
    picture = svg_of(replace(chain, images=(*chain.images[:-1], marked)))
    badges = element(picture, "image:node-D")
    assert "bm0 · 192 KiB dirty" in badges
    assert "bm1 · 0 B dirty · disabled" in badges
    assert style.BITMAP_FILL in badges
    assert "bm0" not in element(picture, "image:node-C")


@pytest.mark.parametrize(
    ("job", "source", "target"),
    [
        (JobInfo("job0", "stream", "running", MiB, 4 * MiB, "node-C", "node-D"), "C", "D"),
        (JobInfo("job0", "commit", "ready", 4 * MiB, 4 * MiB, "node-D", "node-A"), "D", "A"),
    ],
)
def test_a_running_job_is_an_arrow_in_the_direction_data_flows(job, source, target):
    picture = svg_of(seed_chain(jobs=(job,)))
    arrow = element(picture, "job:job0")
    assert f"<title>n{'ABCD'.index(source)}&#45;&gt;n{'ABCD'.index(target)}</title>" in svg(seed_chain(jobs=(job,)))
    caption = f"job0 · {job.type} · {job.status} · {job.offset / job.length:.0%}"
    assert caption in arrow
    assert style.job_colour(job.type) in arrow


def test_a_mirror_target_is_drawn_outside_the_chain():
    job = JobInfo("job1", "mirror", "running", MiB, 4 * MiB, "node-D", "e.qcow2")
    chain = seed_chain(jobs=(job,), targets=(Image("e.qcow2", "qcow2", 64 * MiB, 0),))
    picture = svg_of(chain)
    target = element(picture, "target:e.qcow2")
    assert "outside the chain" in target and "e.qcow2" in target
    assert "job1 · mirror · running · 25%" in element(picture, "job:job1")
    assert x_of(picture, "target:e.qcow2") > x_of(picture, "image:node-D")


def test_a_fleecing_filter_its_scratch_and_export_are_drawn_over_the_active_layer():
    cbw = FilterInfo("pull0-cbw", "copy-before-write", "node-D", target="pull0-scratch")
    view = FilterInfo("pull0-access", "snapshot-access", "pull0-cbw", on_path=False)
    scratch = Image("/tmp/x/scratch.qcow2", "qcow2", 64 * MiB, 0, node_name="pull0-scratch")
    export = ExportInfo("pull0", "pull0-access")  # set up by another client: QEMU does not say where it listens
    picture = svg_of(seed_chain(other_nodes=(scratch,), filters=(cbw, view), exports=(export,)))
    assert "copy-before-write filter" in element(picture, "filter:pull0-cbw")
    assert "snapshot-access filter" in element(picture, "filter:pull0-access")
    assert all(line in element(picture, "scratch:pull0-scratch") for line in ("scratch.qcow2", "point-in-time scratch"))
    assert "old data" in element(picture, "copies:pull0-cbw")
    shown = element(picture, "export:pull0")
    assert "export pull0 · nbd" in shown and "address not reported by QEMU" in shown
    assert "f0->device" in element(picture, "attached:virtio0"), "the device writes through the filter"
    assert x_of(picture, "image:node-D") < x_of(picture, "filter:pull0-cbw") < x_of(picture, "device:virtio0")
    lines = text(seed_chain(filters=(cbw,), exports=(export,)))
    assert "pull0-cbw  copy-before-write  reads node-D  target pull0-scratch" in lines and "address not" in lines


@pytest.mark.parametrize(("fault", "status"), [("write error, stopped", "paused"), ("read error, ignored", "running")])
def test_a_job_that_met_an_io_error_is_drawn_in_the_error_colour_and_names_it(fault, status):
    job = FaultedJobInfo("job1", "mirror", status, MiB, 4 * MiB, "node-D", "e.qcow2", fault=fault)
    chain = seed_chain(jobs=(job,), targets=(Image("e.qcow2", "qcow2", 64 * MiB, 0),))
    arrow = element(svg_of(chain), "job:job1")
    assert f"job1: {fault}" in arrow and f"mirror · {status} · 25%" in arrow
    assert arrow.count(ERROR) >= 3 and style.job_colour("mirror") not in arrow, "line, head and text in red"
    plain = element(svg_of(replace(chain, jobs=(JobInfo(*astuple(job)[:-1]),))), "job:job1")
    assert "error" not in plain and style.job_colour("mirror") in plain, "without a fault the arrow is as before"


NBD = "nbd:localhost:49153:exportname=node-TargetDisk"


def test_a_target_the_chain_has_no_node_for_is_labelled_by_the_job_writing_it():
    job = JobInfo("job0", "mirror", "running", 0, 0, "node-D", NBD)
    picture = svg_of(seed_chain(jobs=(job,)))  # no targets entry: the job's arrow draws it
    target = element(picture, f"target:{NBD}")
    assert NBD in target and "target of job0, written by the mirror" in target
    assert "not opened yet" not in target, "the mirror has opened it and writes into it"
    assert f'stroke="{style.job_colour("mirror")}"' in target
    assert "job:job0" in picture

    placeholder = Image(NBD, "?", 0)  # what vm.chain() lists when QEMU has no named node for it
    for status, said in (("ready", "kept in step by the mirror (ready)"), ("paused", "now paused")):
        chain = seed_chain(jobs=(replace(job, status=status),), targets=(placeholder,))
        assert said in element(svg_of(chain), f"target:{NBD}")
        assert said in text(chain) and "not opened yet" not in text(chain)


def test_only_a_preview_target_is_not_opened_yet():
    job = JobInfo("job0", "mirror", PREVIEW_STATUS, 0, 0, "node-D", NBD)
    chain = seed_chain(jobs=(job,), targets=(Image(NBD, "?", 0),))
    target = element(svg_of(chain), f"target:{NBD}")
    assert "not opened yet" in target and "target of" not in target
    assert "not opened yet" in text(chain)


def test_retired_images_are_greyed_with_the_seeds_rule():
    retired = (
        RetiredImage("b.qcow2", "node-B", "stream", True, "still valid: a point in time; safe to delete or keep"),
        RetiredImage("c.qcow2", "node-C", "commit", False, "invalid: do not use"),
    )
    chain = Chain((image("a"), image("d", "a", device="virtio0")), device="virtio0", retired=retired)
    picture = svg_of(chain)
    valid, invalid = element(picture, "retired:node-B"), element(picture, "retired:node-C")
    assert "still valid: a point in time; safe to delete or keep" in valid and "left by stream" in valid
    assert "invalid: do not use" in invalid and "left by commit" in invalid
    assert f'stroke="{style.MUTED}"' in valid and f'stroke="{style.INVALID}"' in invalid
    assert "stroke-dasharray" in valid
    assert "left the chain" in picture
    assert "invalid: do not use" not in svg_of(chain, show_retired=False)
    assert "c.qcow2 (node-C) after commit: invalid: do not use" in text(chain)


def test_diff_highlights_new_images_and_repointed_arrows():
    before = seed_chain()
    a, b, c, d = before.images
    after_snapshot = Chain((a, b, c, replace(d, device=None), image("e", "d", device="virtio0")), device="virtio0")
    picture = svg_of(after_snapshot, diff_from=before)
    new = element(picture, "image:node-E")
    assert "new" in new and style.NEW in new
    assert style.NEW not in element(picture, "image:node-D")

    after_commit = Chain((a, replace(d, backing_file="a.qcow2")), device="virtio0")
    picture = svg_of(after_commit, diff_from=before)
    arrow = element(picture, "backing:node-D")
    assert "re-pointed (was c.qcow2)" in arrow and style.REPOINTED in arrow
    assert "removed" in element(picture, "retired:node-B")  # gone, and no job said why
    assert " ~d.qcow2" in text(after_commit, diff_from=before)


def test_awkward_names_are_escaped():
    odd = Image('json:{"driver": "qcow2", "file": "<a&b>.qcow2"}', "qcow2", MiB, node_name="node-<odd>")
    picture = svg_of(Chain((odd,), device="virtio0"))
    assert 'json:{"driver": "qcow2", "file": "<a&b>.qcow2"}' in picture


def test_png_and_files(tmp_path):
    chain = seed_chain()
    assert png(chain).startswith(b"\x89PNG")
    assert save(chain, tmp_path / "chain.svg").read_text().startswith("<svg")
    assert save(chain, tmp_path / "chain.png").read_bytes().startswith(b"\x89PNG")
    assert "digraph" in save(chain, tmp_path / "chain.dot").read_text()
    with pytest.raises(qb.Error, match="suffix"):
        save(chain, tmp_path / "chain.jpeg")


def test_jupyter_shows_a_chain_as_its_diagram():
    bundle = seed_chain()._repr_mimebundle_()
    assert bundle["image/svg+xml"].startswith("<svg")
    assert bundle["text/plain"].startswith("[a.qcow2] <-- [b.qcow2]")
    assert "image/svg+xml" not in seed_chain()._repr_mimebundle_(include=["text/plain"])


def test_without_dot_the_text_fallback_says_how_to_install_graphviz(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no dot to be found
    assert not dot_available()
    chain = seed_chain(jobs=(JobInfo("job0", "stream", "running", MiB, 4 * MiB, "node-C", "node-D"),))
    bundle = chain._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}
    assert "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]" in bundle["text/plain"]
    assert "job0 · stream · running · 25%  node-C → node-D" in bundle["text/plain"]
    assert "sudo apt-get install graphviz" in bundle["text/plain"]
    with pytest.raises(qb.ToolError, match="sudo apt-get install graphviz"):
        svg(chain)
    assert render(chain).source  # building the graph needs no dot


# -- real chains from QEMU ----------------------------------------------------------------------
def test_a_real_seed_chain(seed_vm):
    chain = seed_vm.chain()
    picture = svg_of(chain)
    xs = [x_of(picture, f"image:node-{letter}") for letter in "ABCD"]
    assert xs == sorted(xs)
    assert "active layer · virtio0" in element(picture, "image:node-D")
    for letter in "abcd":
        assert f"{letter}.qcow2" in element(picture, f"image:node-{letter.upper()}")
    assert "64 MiB virtual" in element(picture, "image:node-A")
    assert size_pt(picture)[0] < CELL_PT, "QEMU's real sizes keep the seed's row inside a notebook cell"


def test_real_jobs_then_the_images_they_retired(seed_vm):
    vm = seed_vm
    job = vm.block_stream(device="node-C", base_node="node-A", job_id="job0", speed=64 << 10)
    picture = svg_of(vm.chain())  # a 64 KiB/s stream of B's 1 MiB is still running
    assert re.search("job0 · stream · (created|running)", element(picture, "job:job0"))
    assert "<title>n1&#45;&gt;n2</title>" in svg(vm.chain())  # B (backing) -> C (overlay)
    job.set_speed(0)
    job.wait()
    assert str(vm.chain()) == "[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert vm.verify(expected_view("ABCD"))

    vm.block_commit(device="node-D", top_node="node-C", base_node="node-A", job_id="job1").wait()
    chain = vm.chain()
    assert str(chain) == "[a.qcow2] <-- [d.qcow2]"
    assert vm.verify(expected_view("ABCD"))
    picture = svg_of(chain)
    # B was streamed out, still valid, until the commit wrote C into A, which B reads through
    assert "invalid: a later commit wrote into a.qcow2" in element(picture, "retired:node-B")
    assert "invalid: do not use" in element(picture, "retired:node-C")
    assert "active layer · virtio0" in element(picture, "image:node-D")


def test_a_real_mirror_into_an_nbd_export_labels_its_target_by_the_job(seed_vm, lab):
    destination = launch_destination(lab, seed_vm)
    migration = StorageMigration(seed_vm, destination, speed="64k")
    migration.start_server()
    migration.export_target()
    job = migration.mirror()
    chain = seed_vm.chain()
    picture = svg_of(chain)
    target = element(picture, f"target:{job.target}")
    assert re.search(rf"target of {job.id}, (opened|written) by the mirror", target)
    assert "not opened yet" not in picture
    job.set_speed(0)
    migration.run()
    destination.flush()
    assert lab.compare("d.qcow2", "target-disk.qcow2")
    assert destination.verify(expected_view("ABCD"))


def test_a_thousand_image_chain_with_a_running_job_draws():
    """dot 2.43 crashed on a long labelled job arrow across 1,000 images; long chains label it outside."""
    images = tuple(
        Image(f"i{k}.qcow2", "qcow2", 1 << 20, node_name=f"n{k}", backing_file=f"i{k - 1}.qcow2" if k else None)
        for k in range(1000)
    )
    chain = Chain(images, device="virtio0", jobs=(JobInfo("job0", "stream", "running", 1, 4, "n0", "n999"),))
    drawing = svg(chain)
    assert "i999.qcow2" in drawing and "job0" in drawing
