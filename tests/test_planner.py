"""qb.plan: every goal reachable from the seed's chain, planned, refused or run on a real QEMU with the data checked.

The pure tests plan on paper (the seed's chain with its real allocation); the live ones run each plan on a
fresh seed chain and check the chain QEMU reports, the chain on disk, the guest's data, and that every
image the plan says stays a valid point in time still reads as one.  A property test draws random chains
and random reachable goals.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from html import unescape

import pytest
from foreign import ForeignQemu, drive_if_virtio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qblocknb as qb
from qblocknb.model import plansearch
from qblocknb.model.chain import Chain, Image
from qblocknb.model.planmoves import State, moves
from qblocknb.model.planner import CRITERIA, Route, chain_from_notation, make_plan, parse_goal
from qblocknb.model.plansearch import search
from qblocknb.model.predict import predict
from qblocknb.teaching.seedchain import LAYERS, expected_view
from qblocknb.widgets import PlanView

MiB = 1 << 20
SEED = "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
SEED_ALLOCATION = {layer.file: [(layer.offset, layer.length)] for layer in LAYERS}  # what qemu-img map says
SUBSEQUENCES = [
    " <-- ".join(f"[{letter}.qcow2]" for letter in letters)
    for size in range(1, 5)
    for letters in itertools.combinations("abcd", size)
]
MIRROR_GOALS = [
    "[e.qcow2]",
    "[a.qcow2] <-- [e.qcow2]",
    "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [e.qcow2]",
    "[b.qcow2] <-- [e.qcow2]",
    "[e.qcow2] <-- [f.qcow2]",
    "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] <-- [e.qcow2]",
]
# The seed's eight cases: each is the chosen plan for its result, or a rejected alternative.
SEED_CASES = [
    ("[d.qcow2]", "block-stream device=node-D"),
    ("[a.qcow2] <-- [d.qcow2]", "block-stream device=node-D base-node=node-A"),
    ("[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "block-stream device=node-C base-node=node-A"),
    ("[a.qcow2] <-- [c.qcow2] <-- [d.qcow2]", "block-commit device=node-D base-node=node-A top-node=node-B"),
    ("[a.qcow2] <-- [d.qcow2]", "block-commit device=node-D base-node=node-A top-node=node-C"),
    ("[a.qcow2]", "block-commit device=node-D base-node=node-A top-node=node-D"),
    ("[a.qcow2] <-- [b.qcow2] <-- [d.qcow2]", "block-commit device=node-D base-node=node-B top-node=node-C"),
    ("[a.qcow2] <-- [b.qcow2]", "block-commit device=node-D base-node=node-B top-node=node-D"),
]


def seed_plan(goal: str) -> qb.Plan:
    return make_plan(chain_from_notation(SEED), goal, SEED_ALLOCATION)


def without_job_id(line: str) -> str:
    return " ".join(part for part in line.split() if not part.startswith("job-id="))


Views = Callable[[list[str]], list]  # the (offset, length, pattern) runs a reader sees through these layers


def point_in_time(name: str, layers: list[str], views: Views) -> list:
    """What ``name`` read when it was the active layer: the view through it and every layer below."""
    return views(layers[: layers.index(name) + 1])


# -- on paper --------------------------------------------------------------------------------------
@pytest.mark.parametrize("goal", SUBSEQUENCES + MIRROR_GOALS)
def test_every_goal_from_the_seed_gets_a_plan_whose_chains_agree_with_predict(goal):
    plan = seed_plan(goal)
    assert str(plan.chains[-1]) == goal
    assert str(plan.chains[0]) == SEED
    for before, step, after in zip(plan.chains, plan.steps, plan.chains[1:], strict=False):
        assert str(predict(before, step.command, step.arguments).after) == str(after)
        assert step.shell_line.startswith(step.command) and f'"execute": "{step.command}"' in step.json
        assert step.ready == (step.command == "drive-mirror" or step.arguments.get("top-node") == before.active.label)
    assert plan.cost.steps == len(plan.steps)
    assert plan.cost.bytes == sum(step.copies for step in plan.steps)
    for alternative in plan.alternatives:
        assert str(alternative.route.chains[-1]) == goal, "a rejected plan reaches the goal too"
        assert alternative.route.order() >= plan.route.order() and alternative.reason.startswith("it ")


@pytest.mark.parametrize(("goal", "command"), SEED_CASES)
def test_each_seed_case_is_chosen_or_rejected_with_a_reason(goal, command):
    plan = seed_plan(goal)
    chosen = [without_job_id(step.shell_line) for step in plan.steps]
    rejected = {
        tuple(without_job_id(s.shell_line) for s in alternative.steps): alternative.reason
        for alternative in plan.alternatives
    }
    if command.startswith("block-stream"):
        assert chosen == [command], "a stream keeps the images it drops valid, so it wins where it can"
    elif goal in ("[a.qcow2]", "[a.qcow2] <-- [b.qcow2]"):
        assert chosen == [command], "only an active commit drops the active layer into an image the goal keeps"
    else:
        assert chosen[0].startswith("block-stream")
        assert "invalid, where the chosen plan leaves none invalid" in rejected[(command,)]


def test_the_choice_counts_bytes_first():
    """[b.qcow2]: committing C and D into B first leaves less of A to stream (3 MiB), not 5 MiB the other way."""
    plan = seed_plan("[b.qcow2]")
    assert [without_job_id(s.shell_line) for s in plan.steps] == [
        "block-commit device=node-D base-node=node-B top-node=node-D",
        "block-stream device=node-B",
    ]
    assert plan.cost.bytes == 3 * MiB and plan.cost.invalid == ("c.qcow2", "d.qcow2")
    reasons = [alternative.reason for alternative in plan.alternatives]
    assert "it copies about 4 MiB, where the chosen plan copies 3 MiB" in reasons
    assert plan.cost.pauses == 0 and "the guest keeps running" in str(plan.cost)


def test_prefer_puts_points_in_time_before_bytes():
    goal = "[b.qcow2] <-- [d.qcow2]"
    cheapest = seed_plan(goal)
    assert [s.command for s in cheapest.steps] == ["block-commit", "block-stream"] and cheapest.cost.bytes == 3 * MiB
    keeping = make_plan(chain_from_notation(SEED), goal, SEED_ALLOCATION, prefer=("invalid",))
    assert [without_job_id(s.shell_line) for s in keeping.steps] == [
        "block-stream device=node-B",
        "block-stream device=node-D base-node=node-B",
    ]
    assert keeping.cost.invalid == () and keeping.cost.bytes == 4 * MiB
    reasons = [alternative.reason for alternative in keeping.alternatives]
    assert "it leaves c.qcow2 invalid, where the chosen plan leaves none invalid" in reasons
    with pytest.raises(qb.InputError, match="prefer= names 'speed', which is no criterion"):
        make_plan(chain_from_notation(SEED), goal, prefer=("speed",))


def test_a_new_copy_with_the_old_base_mirrors_the_top_then_streams_into_the_copy():
    plan = seed_plan("[a.qcow2] <-- [e.qcow2]")
    assert [without_job_id(s.shell_line) for s in plan.steps] == [
        "drive-mirror device=node-D target=e.qcow2 format=qcow2 sync=top node-name=node-E",
        "block-stream device=node-E base-node=node-A",
    ]
    assert plan.cost.bytes == 3 * MiB and plan.cost.invalid == ()
    reasons = {alternative.reason for alternative in plan.alternatives}
    assert "it copies about 5 MiB, where the chosen plan copies 3 MiB" in reasons, "streaming into D, then mirroring"
    assert "it leaves b.qcow2, c.qcow2 invalid, where the chosen plan leaves none invalid" in reasons
    assert "it costs the same on every count; streams come before mirrors, and mirrors before commits" in reasons


def test_a_later_commit_below_a_streamed_out_image_makes_it_invalid_too():
    plan = seed_plan("[a.qcow2]")
    streamed = next(a for a in plan.alternatives if [s.command for s in a.steps] == ["block-stream", "block-commit"])
    assert set(streamed.cost.invalid) == {"b.qcow2", "c.qcow2", "d.qcow2"}
    notes = {r.name: r.note for r in streamed.route.chains[-1].retired}
    assert notes["b.qcow2"] == "invalid: a later commit wrote into a.qcow2, which it reads through"
    assert notes["d.qcow2"] == "invalid: do not use"


def test_goals_come_as_notation_chains_or_names_and_steps_as_pairs():
    chain = chain_from_notation(SEED)
    by_chain = make_plan(chain, chain_from_notation("[a.qcow2] <-- [d.qcow2]"))
    by_names = qb.plan(SEED, ["a.qcow2", "node-D"])
    assert [tuple(step) for step in by_chain.steps] == [tuple(step) for step in by_names.steps]
    [(command, arguments)] = by_names.steps
    assert (command, arguments) == ("block-stream", {"device": "node-D", "base-node": "node-A", "job-id": "job0"})


def test_a_chain_that_is_the_goal_needs_no_step_and_unknown_layouts_count_sizes():
    assert seed_plan(SEED).steps == () and seed_plan(SEED).cost.bytes == 0
    sized = chain_from_notation("[a.qcow2] <-- [b.qcow2]")
    plan = make_plan(sized, "[b.qcow2]", {"a.qcow2": 7 * MiB, "b.qcow2": 2 * MiB})
    assert plan.cost.bytes == 7 * MiB, "with no layout, images count as if they never overlap"


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ("[d.qcow2] <-- [a.qcow2]", "jobs never reorder a chain"),
        ("", "the goal is empty"),
        ([], "the goal is empty"),
        ("a.qcow2 <-- [d.qcow2]", "is not in the seed's notation"),
        ("[a.qcow2] <-- [a.qcow2]", "names a.qcow2 twice"),
        ("[x]", "never had"),
        ("[e.qcow2] <-- [d.qcow2]", "puts d.qcow2 above the new image e.qcow2"),
        ("[a.qcow2] <-- [old.qcow2]", "which left the chain"),
        ("[a.qcow2] <-- [node-Z]", "which QEMU has open outside the chain"),
    ],
)
def test_impossible_goals_are_refused_with_a_sentence(goal, message):
    chain = chain_from_notation(SEED)
    retired = qb.RetiredImage("old.qcow2", "node-O", "stream", True, "still valid")
    other = Image("z.qcow2", "qcow2", 0, node_name="node-Z")
    with pytest.raises(qb.InputError, match=message) as caught:
        make_plan(Chain(chain.images, retired=(retired,), other_nodes=(other,)), goal)
    assert str(caught.value).endswith(".") and "\n" not in str(caught.value)


# -- on a real QEMU ---------------------------------------------------------------------------------
def check_reached(vm: qb.Machine, lab: qb.Lab, plan: qb.Plan, goal: str, views: Views, layers: list[str]) -> None:
    """The chain QEMU and the disk report, the commands sent, the guest's data, each image the plan keeps valid."""
    assert str(vm.chain()) == goal
    assert str(lab.chain(vm.chain().active.file)) == goal, "the chain on disk must match QEMU's"
    jobs = [command for command in vm.history["command"] if command in ("block-stream", "block-commit", "drive-mirror")]
    assert jobs[len(jobs) - len(plan.steps) :] == [step.command for step in plan.steps]
    assert vm.verify(views(layers))
    for retired in plan.chains[-1].retired:
        if retired.valid and retired.name in layers:
            assert lab.runs_match(retired.name, point_in_time(retired.name, layers, views)), retired.name


SEED_LAYERS = [layer.file for layer in LAYERS]


def seed_view(files: list[str]) -> list:
    return expected_view("".join(layer.letter for layer in LAYERS if layer.file in files))


@pytest.mark.parametrize("goal", SUBSEQUENCES + MIRROR_GOALS)
def test_every_goal_is_reached_on_a_real_qemu_with_the_data_intact(seed_vm, lab, goal):
    plan = qb.plan(seed_vm, goal)
    assert plan.start.device == "virtio0" and plan.cost.bytes == seed_plan(goal).cost.bytes
    reached = plan.run(seed_vm, timeout=60)
    assert str(reached) == goal
    check_reached(seed_vm, lab, plan, goal, seed_view, SEED_LAYERS)


@pytest.mark.parametrize(
    ("goal", "message"),
    [
        ("[d.qcow2] <-- [b.qcow2]", "jobs never reorder a chain"),
        ("[a.qcow2] <-- [x]", "which the chain .* never had"),
        ("[a.qcow2] <-- [e.qcow2]", r"the new copy target e.qcow2 already exists .*drive-mirror would overwrite it"),
    ],
)
def test_impossible_goals_on_a_real_qemu_send_nothing(seed_vm, lab, goal, message):
    lab.create("e.qcow2", size="1M")
    sent = len(seed_vm.history)
    with pytest.raises(qb.InputError, match=message):
        qb.plan(seed_vm, goal)
    assert len(seed_vm.history) == sent
    assert str(seed_vm.chain()) == SEED and seed_vm.verify(expected_view("ABCD"))


def test_a_failing_step_stops_the_plan_with_a_sentence_naming_it(seed_vm, lab):
    plan = qb.plan(seed_vm, "[e.qcow2] <-- [f.qcow2]")
    lab.file("f.qcow2").mkdir()  # after planning: drive-mirror cannot create its second target
    with pytest.raises(qb.StepFailed, match=r"step 2 of 2 .*drive-mirror .*failed") as caught:
        plan.run(seed_vm, timeout=60)
    assert "the chain is now [e.qcow2]; plan again" in str(caught.value)
    assert str(caught.value.chain) == "[e.qcow2]" and seed_vm.verify(expected_view("ABCD"))


def test_a_plan_for_another_chain_is_refused(seed_vm):
    paper = chain_from_notation(SEED)
    renamed = Chain(tuple(replace(image, node_name=f"disk-{image.name[0]}") for image in paper.images))
    elsewhere = make_plan(renamed, "[a.qcow2] <-- [d.qcow2]")
    plan = qb.plan(seed_vm, "[a.qcow2] <-- [d.qcow2]")
    sent = len(seed_vm.history)
    with pytest.raises(
        qb.InputError, match=r"\(disk-a, disk-b, disk-c, disk-d\), but the chain is .* \(node-A, node-B"
    ):
        elsewhere.run(seed_vm)
    assert len(seed_vm.history) == sent
    seed_vm.block_stream(device="node-C", base_node="node-A", job_id="other").wait(timeout=60)
    sent = len(seed_vm.history)
    with pytest.raises(qb.InputError, match="this plan starts from"):
        plan.run(seed_vm)
    assert len(seed_vm.history) == sent


def test_a_plan_shows_its_steps_diagrams_and_rejections(seed_vm):
    html = unescape(qb.plan(seed_vm, "[a.qcow2] <-- [d.qcow2]")._repr_html_())
    assert "(QEMU) block-stream device=node-D base-node=node-A job-id=job0" in html
    assert html.count("<svg") == 2, "the chain now, and after the one step"
    assert "Rejected" in html and "leaves b.qcow2, c.qcow2 invalid" in html


def test_a_qemu_with_automatic_node_names_is_planned_by_them(lab: qb.Lab, tmp_path):
    """``-drive if=virtio`` names every node ``#blockNNN``: commands name them so, and a new copy lies where asked."""
    lab.create("a.qcow2", size="16M")
    lab.write("a.qcow2", 0, "2M", pattern=0xA1)
    for name, below, pattern in (("b.qcow2", "a.qcow2", 0xB2), ("c.qcow2", "b.qcow2", 0xC3)):
        lab.create(name, backing=below)
        lab.write(name, {"b.qcow2": "1M", "c.qcow2": "3M"}[name], "1M", pattern=pattern)
    qemu = ForeignQemu(tmp_path, drive_if_virtio(lab.file("c.qcow2")))
    vm = qb.connect(qemu.socket)
    try:
        target = str(lab.file("e.qcow2"))  # a QEMU attached to has its own folder: name the copy in full
        plan = qb.plan(vm, f"[a.qcow2] <-- [{target}]")
        assert plan.steps[1].arguments["base-node"].startswith("#block")
        assert str(plan.run(vm, timeout=60)) == "[a.qcow2] <-- [e.qcow2]"
        view = [(0, "1M", 0xA1), ("1M", "1M", 0xB2), ("2M", "1M", 0), ("3M", "1M", 0xC3)]
        assert vm.verify(view)
        vm.flush()
        assert str(lab.chain("e.qcow2")) == "[a.qcow2] <-- [e.qcow2]"
        assert lab.runs_match("e.qcow2", view)
    finally:
        vm.session.close()
        qemu.end()


# -- random chains ----------------------------------------------------------------------------------
BLOCK = 256 << 10
BLOCKS = 16


@st.composite
def chains_and_goals(draw):
    """3 to 6 layers, each writing a random set of 256 KiB blocks; a random goal the chain can reach."""
    size = draw(st.integers(3, 6))
    files = [f"l{number}.qcow2" for number in range(size)]
    writes = [draw(st.sets(st.integers(0, BLOCKS - 1), min_size=1, max_size=6)) for _ in files]
    keep = [file for file in files if draw(st.booleans())]
    new = [f"n{number}.qcow2" for number in range(draw(st.integers(0 if keep else 1, 2)))]
    return files, writes, " <-- ".join(f"[{name}]" for name in keep + new)


def random_view(files: list[str], writes: list[set[int]]) -> Views:
    def view(layers: list[str]) -> list:
        blocks = [0] * BLOCKS
        for number, file in enumerate(files):
            if file in layers:
                for block in writes[number]:
                    blocks[block] = 0x11 * (number + 1)
        return [(block * BLOCK, BLOCK, pattern) for block, pattern in enumerate(blocks)]

    return view


@settings(max_examples=60, deadline=None, database=None)
@given(drawn=chains_and_goals())
def test_random_goals_on_paper_are_planned_and_agree_with_predict(drawn):
    files, writes, goal = drawn
    chain = chain_from_notation(" <-- ".join(f"[{file}]" for file in files))
    allocation = {
        file: [(block * BLOCK, BLOCK) for block in blocks] for file, blocks in zip(files, writes, strict=True)
    }
    plan = make_plan(chain, goal, allocation)
    assert str(plan.chains[-1]) == goal
    for before, step, after in zip(plan.chains, plan.steps, plan.chains[1:], strict=False):
        assert str(predict(before, step.command, step.arguments).after) == str(after)
    assert all(alternative.route.order() >= plan.route.order() for alternative in plan.alternatives)


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=chains_and_goals())
def test_random_chains_reach_random_goals_with_the_data_intact(tmp_path_factory, drawn):
    files, writes, goal = drawn
    with qb.Lab(tmp_path_factory.mktemp("plan")) as lab:
        lab.create(files[0], size="16M")
        for block in writes[0]:
            lab.write(files[0], block * BLOCK, BLOCK, pattern=0x11)
        vm = lab.launch(files[0], node_name="node-L0")
        for number, file in enumerate(files[1:], 1):
            vm.blockdev_snapshot_sync(
                node_name=f"node-L{number - 1}",
                snapshot_file=file,
                snapshot_node_name=f"node-L{number}",
                format="qcow2",
            )
            for block in writes[number]:
                vm.write("virtio0", block * BLOCK, BLOCK, pattern=0x11 * (number + 1))
        plan = qb.plan(vm, goal)
        assert str(plan.run(vm, timeout=60)) == goal
        check_reached(vm, lab, plan, goal, random_view(files, writes), files)


# -- the widget ------------------------------------------------------------------------------------
def test_plan_view_ticks_previews_and_runs(seed_vm, lab: qb.Lab):
    view = PlanView(seed_vm)
    assert [box.description for box in view.boxes.values()] == ["a.qcow2", "b.qcow2", "c.qcow2", "d.qcow2"]
    assert view.run_button.disabled and "nothing to do" in view.view.value
    a, b, c, d = view.boxes.values()
    for box in (b, c, d):
        box.value = False
    assert [s.command for s in view.plan.steps] == ["block-commit"] and not view.run_button.disabled
    a.value = False
    assert "the goal is empty" in unescape(view.error.value) and view.run_button.disabled and view.view.value == ""
    a.value = d.value = True
    shown = unescape(view.view.value)
    assert "(QEMU) block-stream device=node-D base-node=node-A job-id=job0" in shown
    assert "Rejected" in shown and "leaves b.qcow2, c.qcow2 invalid" in shown and shown.count("<svg") == 2
    view.targets.value = "e.qcow2"
    assert "drive-mirror device=node-D target=e.qcow2" in unescape(view.view.value)
    view.targets.value = "e.qcow2 b.qcow2"
    assert "puts b.qcow2 above the new image e.qcow2" in unescape(view.error.value)
    view.targets.value = ""

    view.run_button.click()
    view.worker.join(timeout=60)
    assert not view.worker.is_alive() and not view.running and "Done" in view.status.value
    assert str(seed_vm.chain()) == "[a.qcow2] <-- [d.qcow2]" and seed_vm.verify(expected_view("ABCD"))
    assert view.progress.value == view.progress.max == 1
    assert [box.description for box in view.boxes.values()] == ["a.qcow2", "d.qcow2"]
    assert lab.runs_match("b.qcow2", expected_view("AB")), "the streamed-out image is still its point in time"

    view.targets.value = "f.qcow2"
    lab.file("f.qcow2").mkdir()  # after the plan was shown: its one step must fail, and say so
    view.run_button.click()
    view.worker.join(timeout=60)
    assert "step 1 of 1 of the plan to [a.qcow2] &lt;-- [d.qcow2] &lt;-- [f.qcow2]" in view.error.value
    assert "Done" not in view.status.value and str(seed_vm.chain()) == "[a.qcow2] <-- [d.qcow2]"
    view.close()


# -- the search: exact, fast, and saying what it does not know ------------------------------------------
def exhaustive_cost(chain: Chain, goal: str, allocation: dict, criteria=CRITERIA) -> tuple:
    """The oracle: the old planner's search, every sequence of moves with no memory, the cheapest cost."""
    wanted = parse_goal(chain, goal)
    best: list[tuple] = []

    def walk(state: State, made: tuple) -> None:
        if state.files == wanted.files:
            best.append(Route(chain, made).cost.key(criteria))
            return
        for move in moves(state, wanted, f"job{len(made)}"):
            walk(move.after, (*made, move))

    walk(State.start(chain, allocation), ())
    return min(best)


@st.composite
def overlapping_chains(draw):
    """Up to 8 images, each holding a random set of 1 MiB blocks out of 6 (so they overlap), and a goal."""
    files = [f"l{number}.qcow2" for number in range(draw(st.integers(2, 8)))]
    blocks = {file: draw(st.sets(st.integers(0, 5), max_size=4)) for file in files}
    keep = [file for file in files if draw(st.booleans())]
    new = [f"n{number}.qcow2" for number in range(draw(st.integers(0 if keep else 1, 1)))]
    criteria = draw(st.sampled_from([CRITERIA, ("invalid", "pauses", "bytes", "steps")]))
    return files, blocks, " <-- ".join(f"[{name}]" for name in keep + new), criteria


@settings(max_examples=60, deadline=None, database=None)
@given(drawn=overlapping_chains())
def test_the_search_finds_the_cost_an_exhaustive_search_finds(drawn):
    files, blocks, goal, criteria = drawn
    chain = chain_from_notation(" <-- ".join(f"[{file}]" for file in files))
    allocation = {file: [(block * MiB, MiB) for block in held] for file, held in blocks.items()}
    wanted, start = parse_goal(chain, goal), State.start(chain, allocation)
    oracle = exhaustive_cost(chain, goal, allocation, criteria)
    for canonical in (False, True):  # every order, and the canonical order that long chains use
        found = search(start, wanted, [f"job{n}" for n in range(20)], criteria, True, canonical)
        assert not found.limited
        assert min(Route(chain, made).cost.key(criteria) for made in found.routes) == oracle, canonical
    assert make_plan(chain, goal, allocation, prefer=criteria[:1]).cost.key(criteria) == oracle


def fifty_images(overlap: bool) -> tuple[Chain, dict, str, list[str]]:
    """Keep every other image of 50; with ``overlap``, each pair of dropped images writes the same block."""
    files = [f"i{number:02d}.qcow2" for number in range(50)]
    chain = chain_from_notation(" <-- ".join(f"[{file}]" for file in files))
    allocation = {
        file: [((number // 4) * MiB if overlap and number % 2 else (100 + number) * MiB, MiB)]
        for number, file in enumerate(files)
    }
    return chain, allocation, " <-- ".join(f"[{file}]" for file in files[::2]), files


def alternating_plan_bytes(chain: Chain, allocation: dict, goal: str) -> int:
    """The hand-built plan: commit every second gap into the image below it, then stream the others."""
    state, wanted = State.start(chain, allocation), parse_goal(chain, goal)
    copied = 0
    for pick in ("block-commit", "block-stream"):
        while True:
            move = next((m for m in moves(state, wanted, "job") if m.command == pick and _second_gap(m)), None)
            if move is None:
                break
            copied, state = copied + move.copies, move.after
    while state.files != wanted.files:
        move = next(m for m in moves(state, wanted, "job") if m.command == "block-stream")
        copied, state = copied + move.copies, move.after
    return copied


def _second_gap(move) -> bool:
    node = move.arguments.get("top-node") or move.arguments["device"]
    return int(node.removeprefix("node-I")) % 4 == 3 or move.kind == "active commit"


@pytest.mark.parametrize("overlap", [False, True])
def test_fifty_images_are_planned_exactly_and_no_worse_than_the_alternating_plan(overlap):
    chain, allocation, goal, _files = fifty_images(overlap)
    plan = make_plan(chain, goal, allocation)
    assert plan.exact and not plan.limited and "stopped" not in str(plan)
    assert str(plan.chains[-1]) == goal and plan.cost.steps == 25
    assert plan.cost.bytes <= alternating_plan_bytes(chain, allocation, goal)
    assert plan.cost.bytes == (13 if overlap else 25) * MiB


def test_a_search_stopped_at_its_limit_says_so(monkeypatch):
    chain, allocation, goal, _files = fifty_images(True)
    monkeypatch.setattr(plansearch, "SEARCH_BUDGET", 10)
    plan = make_plan(chain, goal, allocation)
    assert plan.limited and not plan.exact and str(plan.chains[-1]) == goal, "the best route found, completed"
    assert "the search stopped at its limit of 10 states: this is the best plan it found, not proven" in str(plan)
    assert plan.cost.bytes > 13 * MiB


def test_a_chain_without_sizes_says_bytes_are_unknown_and_ranks_by_the_rest():
    plan = qb.plan(SEED, "[a.qcow2] <-- [d.qcow2]")
    assert not plan.bytes_known and not plan.cost.bytes_known
    assert "copies an unknown number of bytes in 1 step" in str(plan) and "about 0 B" not in str(plan)
    assert [s.command for s in plan.steps] == ["block-stream"], "nothing left invalid wins"
    assert all("copies about" not in alternative.reason for alternative in plan.alternatives)
    assert seed_plan("[a.qcow2] <-- [d.qcow2]").bytes_known


def test_bare_names_that_match_one_file_stem_are_accepted():
    chain = chain_from_notation(" <-- ".join(f"[i{number:02d}.qcow2]" for number in range(12)))
    plan = make_plan(chain, "[i00] <-- [i11]")
    assert str(plan.chains[-1]) == "[i00.qcow2] <-- [i11.qcow2]"
    twins = chain_from_notation("[a.qcow2] <-- [a.raw] <-- [b.qcow2]")
    with pytest.raises(qb.InputError, match="never had"):
        make_plan(twins, "[a] <-- [b.qcow2]")
