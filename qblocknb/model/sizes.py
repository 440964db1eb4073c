"""Sizes and offsets written the way people write them: ``65536``, ``"64k"``, ``"4M"``.

>>> parse_size("4M")
4194304
>>> parse_size(512)
512
>>> human_size(1572864)
'1.5 MiB'
"""

from __future__ import annotations

import re

from qblocknb.errors import InputError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(value: int | str) -> int:
    """Turn an int or a string such as ``"64k"`` into a byte count."""
    if isinstance(value, bool):
        raise InputError(
            f"size {value!r} is not a size",
            "a boolean is not a byte count",
            "give an int or a string like '64k' or '4M'",
        )
    if isinstance(value, int):
        if value < 0:
            raise InputError(f"size {value} is negative", "", "give a byte count of 0 or more")
        return value
    match = _PATTERN.match(str(value))
    if not match:
        raise InputError(
            f"size {value!r} is not understood",
            "expected a number with an optional unit k, M, G or T",
            "write it like 65536, '64k' or '4M'",
        )
    number, unit = match.groups()
    size = float(number) * _UNITS[unit.lower()]
    if size != int(size):
        raise InputError(f"size {value!r} is not a whole number of bytes", "", "use a smaller unit")
    return int(size)


def parse_named_size(value: int | str, what: str) -> int:
    """``parse_size`` for an argument: a refusal names ``what`` (``"job 'job0': speed"``) before the reason."""
    try:
        return parse_size(value)
    except InputError as error:
        raise InputError(f"{what} {value!r} is refused", error.what, error.todo) from None


def human_size(count: float) -> str:
    """Show a byte count with a binary unit, for tables and diagrams."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"
