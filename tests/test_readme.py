"""The README's Python examples run, in order, against a real QEMU."""

from __future__ import annotations

import re
from pathlib import Path

from foreign import ForeignQemu, libvirt_style

import qblocknb as qb
from qblocknb.live import images

README = Path(__file__).resolve().parent.parent / "README.md"
YOUR_VM = "/run/my-vm/qmp.sock"  # the README's own VM: here one started by hand, libvirt's way


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # every qb.Lab() of the examples lands under the test folder
    namespace: dict = {}
    labs: list[qb.Lab] = []
    real_init = qb.Lab.__init__

    def remembering_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        labs.append(self)

    monkeypatch.setattr(qb.Lab, "__init__", remembering_init)
    own_vm = ForeignQemu(tmp_path, libvirt_style(images.create(tmp_path / "mine.qcow2", "16M")))
    try:
        for block in blocks:
            exec(compile(block.replace(YOUR_VM, str(own_vm.socket)), str(README), "exec"), namespace)
            if YOUR_VM in block:
                assert str(namespace["vm"].chain()) == "[mine.qcow2]"
                namespace["vm"].session.close()
        assert str(namespace["migration"].destination.chain()).endswith("[target-disk.qcow2]")
        assert namespace["backups"].latest.name == "backup1.qcow2"
        assert namespace["vm"].verify([("5M", "64k", 0x5A)])
    finally:
        own_vm.end()
        for lab in labs:
            lab.close()
