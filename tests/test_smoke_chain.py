from qblocknb.teaching.seedchain import expected_view


def test_seed_chain_is_built_live_with_distinct_layers(seed_vm, lab):
    seed_vm.flush()
    assert str(lab.chain("d.qcow2")) == "[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2]"
    assert lab.read_matches("a.qcow2", 0, "4M", 0xA1)
    for letters, image in (("A", "a.qcow2"), ("AB", "b.qcow2"), ("ABC", "c.qcow2")):
        assert all(lab.read_matches(image, *run) for run in expected_view(letters))
    assert not lab.read_matches("c.qcow2", "3M", "1M", 0xD4)
