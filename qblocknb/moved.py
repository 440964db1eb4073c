"""Where modules went when the package took its layers: old import paths keep working.

``from qblocknb.seedchain import build_seed_chain`` is ``from qblocknb.teaching.seedchain import ...`` now;
code written before still runs, with the same module object under both names::

    >>> import qblocknb.seedchain, qblocknb.teaching.seedchain
    >>> qblocknb.seedchain is qblocknb.teaching.seedchain
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from types import ModuleType

MOVED = {
    "actions": "backup.actions",
    "bitmaps": "backup.bitmaps",
    "blockstate": "live.blockstate",
    "chain": "model.chain",
    "chainreader": "live.chainreader",
    "checks": "model.checks",
    "demo": "teaching.demo",
    "guest": "live.guest",
    "guestimage": "live.guestimage",
    "guestio": "live.guestio",
    "history": "qmp.history",
    "images": "live.images",
    "incremental": "backup.incremental",
    "jobregistry": "live.jobregistry",
    "jobs": "live.jobs",
    "jobstate": "model.jobstate",
    "lab": "live.lab",
    "libvirt": "qmp.libvirt",
    "listeners": "model.listeners",
    "loop": "qmp.loop",
    "machine": "live.machine",
    "migration_explain": "migration.explain",
    "migrationview": "widgets.migrationview",
    "nbd": "model.nbd",
    "palette": "model.palette",
    "plots": "widgets.plots",
    "predict": "model.predict",
    "process": "live.process",
    "qmpshell": "model.qmpshell",
    "schema": "live.schema",
    "seedchain": "teaching.seedchain",
    "session": "qmp.session",
    "sizes": "model.sizes",
    "tls": "migration.tls",
    "tools": "live.tools",
    "tutorial": "teaching.tutorial",
    "vocabulary": "model.vocabulary",
}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module that now lives under the new one."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module ran under its new name."""


class MovedModules(importlib.abc.MetaPathFinder):
    """Finds ``qblocknb.OLD`` for every old name in ``MOVED``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != "qblocknb" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(f"qblocknb.{MOVED[old]}"))


def install() -> None:
    if not any(isinstance(finder, MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(MovedModules())
