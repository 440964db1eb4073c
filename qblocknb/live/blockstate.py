"""What QEMU has open, read once per change instead of before every command.

The pre-flight checks, ``vm.chain()`` and the views all start from ``query-block``
and ``query-named-block-nodes``; where ``query-block`` lists no disk (``qemu-storage-daemon``
has no guest device), the block exports stand in for the disks (``export_disks``).
``BlockState`` keeps the last answer until something may have changed it: a
command other than a ``query-*`` (counted by ``changed()``), any QMP event, or
``MAX_AGE`` seconds (another QMP client, such as libvirt, may change a VM without
an event).  Both queries go out together, in one trip to the event loop.

After a snapshot, whose result ``predict`` knows exactly, the predicted chain is
kept too (``expect``), so the next command is checked without asking QEMU again;
it is used for checks only, never shown, and dropped on the next change.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from qblocknb.errors import CommandError
from qblocknb.model.chain import Chain, disks, export_disks
from qblocknb.qmp import loop

MAX_AGE = 1.0  # seconds a read answer stays good when nothing announced a change


class BlockState:
    """The cached ``query-block`` / ``query-named-block-nodes`` pair of one QEMU, and an expected chain."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._generation = 0
        self._answer: tuple[int, float, list[dict], list[dict]] | None = None
        self._expected: tuple[int, float, Chain] | None = None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        """Grows with every change announced: a cheap way for views to see that something happened."""
        return self._generation

    def changed(self) -> None:
        """Something may have changed the block graph: the next read asks QEMU."""
        with self._lock:
            self._generation += 1
            self._answer = self._expected = None

    def read(self) -> tuple[list[dict], list[dict]]:
        """``query-block`` and ``query-named-block-nodes`` (flat), from the cache while it holds."""
        with self._lock:
            generation, answer = self._generation, self._answer
        if answer is not None and answer[0] == generation and time.monotonic() - answer[1] < MAX_AGE:
            return answer[2], answer[3]
        blocks, nodes = self._ask()
        blocks = self._with_exports(blocks)
        with self._lock:
            if self._generation == generation:  # nothing changed while we asked
                self._answer = (generation, time.monotonic(), blocks, nodes)
        return blocks, nodes

    def expect(self, chain: Chain) -> None:
        """The chain a command just produced, as predicted; good for checking the next command."""
        with self._lock:
            self._expected = (self._generation, time.monotonic(), chain)

    def expected(self) -> Chain | None:
        with self._lock:
            expected, generation = self._expected, self._generation
        if expected is None or expected[0] != generation or time.monotonic() - expected[1] >= MAX_AGE:
            return None
        return expected[2]

    def _ask(self) -> tuple[list[dict], list[dict]]:
        async def both() -> tuple[Any, Any]:
            return await asyncio.gather(
                self.session.execute_async("query-block"),
                self.session.execute_async("query-named-block-nodes", {"flat": True}),
            )

        if not loop.in_loop_thread():
            try:
                return loop.run(both(), self.session.timeout)
            except TimeoutError:  # a hung QEMU: asking again, one by one, would only double the wait
                raise self.session.no_answer("query-block", self.session.timeout) from None
            except Exception:  # the plain calls below say what went wrong, as sentences
                pass
        blocks = self.session.execute("query-block", record=False)
        nodes = self.session.execute("query-named-block-nodes", {"flat": True}, record=False)
        return blocks, nodes

    def _with_exports(self, blocks: list[dict]) -> list[dict]:
        """``query-block``, or the exports in its place when it lists no disk (a QEMU with no guest device)."""
        if disks(blocks):
            return blocks
        try:
            return export_disks(self.session.execute("query-block-exports", record=False))
        except CommandError:  # a QEMU older than 5.2, or a backend without exports: no disk, as it says
            return blocks
