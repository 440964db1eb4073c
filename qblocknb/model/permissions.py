"""QEMU's "permission conflict" refusals, read: which edge of the full block graph said no.

A refused ``blockdev-backup`` to a node inside the chain reads::

    >>> text = ("Could not create node: Permission conflict on node 'node-B': permissions 'write' are both "
    ...         "required by node '#block1218' (uses node 'node-B' as 'target' child) and unshared by node "
    ...         "'node-C' (uses node 'node-B' as 'backing' child).")
    >>> conflict = permission_conflict(text)
    >>> conflict.holder, conflict.node, conflict.role, conflict.perms
    ('node-C', 'node-B', 'backing', ('write',))
    >>> conflict.todo()
    "see qb.render(vm, full=True): the edge from node-C to node-B ('backing') does not share 'write'"

The edge named is the one that exists on the diagram: the user that refuses to share (the other one, the
new user, was never created).  Older QEMUs say ``Conflicts with use by X as 'role', which does not allow
'perm' on node``; both are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NEW = re.compile(
    r"Permission conflict on node '(?P<node>[^']*)': permissions '(?P<perms>[^']*)' are both required by "
    r"(?P<wanter>.+?) \(uses node '[^']*' as '(?P<wanted_role>[^']*)' child\) and unshared by "
    r"(?P<holder>.+?) \(uses node '[^']*' as '(?P<role>[^']*)' child\)"
)
_OLD = re.compile(
    r"Conflicts with use by (?P<holder>.+?) as '(?P<role>[^']*)', which does not allow '(?P<perms>[^']*)' "
    r"on (?P<node>[^\s.,]+)"
)
_USER = re.compile(r"^(?:node|block device|[\w-]+ job) '(?P<name>.*)'$")


@dataclass(frozen=True)
class Conflict:
    """A permission QEMU could not grant: ``holder`` uses ``node`` as ``role`` and does not share ``perms``."""

    node: str
    perms: tuple[str, ...]
    holder: str
    role: str
    wanter: str = ""  # who asked, when QEMU says (often a node that was never created)
    wanted_role: str = ""

    def todo(self) -> str:
        """What to look at: the edge on the full diagram."""
        perms = ", ".join(f"'{p}'" for p in self.perms)
        edge = f"the edge from {self.holder} to {self.node} ('{self.role}')"
        return f"see qb.render(vm, full=True): {edge} does not share {perms}"


def permission_conflict(text: str) -> Conflict | None:
    """The conflict a QEMU error text describes, or None when it is about something else."""
    found = _NEW.search(text)
    if found:
        return Conflict(
            found["node"],
            _perms(found["perms"]),
            _user(found["holder"]),
            found["role"],
            _user(found["wanter"]),
            found["wanted_role"],
        )
    found = _OLD.search(text)
    if found:
        node = found["node"].strip("'")
        return Conflict(node, _perms(found["perms"]), _user(found["holder"]), found["role"])
    return None


def _perms(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",") if p.strip())


def _user(text: str) -> str:
    """``node 'node-C'`` -> ``node-C``; ``block device 'virtio0'`` -> ``virtio0``; others as QEMU wrote them."""
    found = _USER.match(text.strip())
    return found["name"] if found else text.strip()


def conflict_todo(text: str) -> str:
    """What to do about a refusal: the conflict's edge on the full diagram, or "" when it is no conflict."""
    conflict = permission_conflict(text)
    return conflict.todo() if conflict is not None else ""
