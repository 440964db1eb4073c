"""The README's Python examples run, in order, against a real QEMU."""

from __future__ import annotations

import re
from pathlib import Path

import qblocknb as qb

README = Path(__file__).resolve().parent.parent / "README.md"


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
    try:
        for block in blocks:
            exec(compile(block, str(README), "exec"), namespace)
        assert str(namespace["migration"].destination.chain()).endswith("[target-disk.qcow2]")
        assert namespace["backups"].latest.name == "backup1.qcow2"
        assert namespace["vm"].verify([("5M", "64k", 0x5A)])
    finally:
        for lab in labs:
            lab.close()
