"""Goal rules: what a chain should become, written once and applied to every disk of a fleet.

A rule maps a ``Chain`` to a goal in the seed's notation, the one ``qb.plan`` takes; a chain that already
meets the rule maps to itself (its plan has no steps).  Both rules keep the base image, since only a stream
into an intermediate image could drop it and libvirt streams into the active layer only::

    >>> from qblocknb.model.planner import chain_from_notation
    >>> deep = chain_from_notation("[a.qcow2] <-- [b.qcow2] <-- [c.qcow2] <-- [d.qcow2] <-- [e.qcow2]")
    >>> max_depth(3)(deep)          # the oldest images and the active layer: recent overlays pulled into it
    '[a.qcow2] <-- [b.qcow2] <-- [e.qcow2]'
    >>> keep_last(2)(deep)          # the newest images over the base: old overlays go into the base
    '[a.qcow2] <-- [d.qcow2] <-- [e.qcow2]'
    >>> max_depth(1)(deep), max_depth(9)(deep) == str(deep)
    ('[e.qcow2]', True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from qblocknb.errors import InputError
from qblocknb.model.chain import Chain, Image


@dataclass(frozen=True)
class Rule:
    """A named goal rule; calling it on a chain gives the goal chain in the seed's notation."""

    name: str
    keep: Callable[[tuple[Image, ...]], tuple[Image, ...]]

    def __call__(self, chain: Chain) -> str:
        return notation(self.keep(chain.images))

    def __str__(self) -> str:
        return self.name


def notation(images: tuple[Image, ...]) -> str:
    """Images in the seed's notation, base first."""
    return " <-- ".join(f"[{image.name}]" for image in images)


def max_depth(depth: int) -> Rule:
    """At most ``depth`` images: the oldest ``depth - 1`` and the active layer (``blockpull --base``).

    The overlays between them are streamed into the active layer, so no image is left invalid.
    """
    _positive("max_depth", depth)

    def keep(images: tuple[Image, ...]) -> tuple[Image, ...]:
        return images if len(images) <= depth else (*images[: depth - 1], images[-1])

    return Rule(f"max_depth({depth})", keep)


def keep_last(count: int) -> Rule:
    """The base and the ``count`` newest images (the active layer counted): older overlays go into the base.

    On libvirt that is a commit of the old overlays into the base (they are left invalid); a QEMU may
    instead stream them into the oldest image kept.
    """
    _positive("keep_last", count)

    def keep(images: tuple[Image, ...]) -> tuple[Image, ...]:
        return images if len(images) <= count + 1 else (images[0], *images[-count:])

    return Rule(f"keep_last({count})", keep)


def _positive(name: str, number: int) -> None:
    if not isinstance(number, int) or number < 1:
        raise InputError(
            f"{name}({number!r}) keeps no image",
            "a chain needs at least its active layer",
            f"pass a whole number of 1 or more, such as {name}(2)",
        )
