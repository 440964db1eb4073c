"""The virsh line of each command a Machine sends or shows, for ``vm.history``, forms and plans.

A command's line needs the chain it was checked against (a layer is ``vda[N]`` or a file, and a stream into
an intermediate image has none), so ``VirshLines`` sits on the pre-flight: ``check`` keeps the chain for the
command this thread sends next, and ``recorded`` (the session history's ``virsh`` hook) turns it into the
line.  The domain and disk come from the session's ``virsh_names`` when it has them (a libvirt-native one),
else they are the placeholders ``DOM`` and ``vda``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qblocknb.errors import Error
from qblocknb.live.chainreader import ChainReader, Checked
from qblocknb.live.jobregistry import JobRegistry
from qblocknb.model.chain import Chain
from qblocknb.model.virsh import Notes
from qblocknb.qmp.session import Session

PLACEHOLDERS = ("DOM", "vda")


class VirshLines:
    """One session's virsh lines: each recorded command's, and any command's on a given chain."""

    def __init__(self, session: Session, reader: ChainReader, registry: JobRegistry) -> None:
        self.session, self.reader, self.registry = session, reader, registry
        self.notes = Notes()  # what earlier commands made, which the lines of later ones name
        self._checked = threading.local()  # the chain this thread's last command was checked against
        session.history.virsh = self.recorded

    @property
    def names(self) -> tuple[str, str]:
        """The domain and the disk, asked of the session each time (a libvirt session knows them)."""
        return getattr(self.session, "virsh_names", PLACEHOLDERS)

    def check(self, command: str, arguments: dict, device: str | None, running: set[str], cwd: Path | None) -> Checked:
        """``ChainReader.check``, keeping the chain for the line of the command this thread sends next."""
        checked = self.reader.check(command, arguments, device, running, cwd)
        self._checked.chain = checked.chain
        return checked

    def line(
        self, command: str, arguments: dict, chain: Chain | None = None, job_type: str = "", remember: bool = False
    ) -> str:
        """``command`` as virsh says it on ``chain`` (by default the one last checked on this thread: only job
        and snapshot commands name layers), after this session's commands; "" when it has none."""
        chain = chain if chain is not None else getattr(self._checked, "chain", None) or Chain(())
        try:
            return self.notes.line(command, arguments, chain, *self.names, job_type, remember)
        except Error:  # a name the checks let through that is no layer of the chain: QEMU will say why
            return ""

    def recorded(self, command: str, arguments: dict) -> str:
        """The history's line for a command going out; a verb's depends on its job (a backup is no block job)."""
        job = self.registry.running(arguments.get("device") or arguments.get("id"))
        return self.line(command, arguments, job_type=str(job.type) if job else "", remember=True)
