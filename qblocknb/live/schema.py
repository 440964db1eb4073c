"""What a QEMU understands, asked of the QEMU itself: its commands, their arguments, and what it deprecates.

Feature detection never looks at a version number: ``query-commands`` says which commands exist and
``query-qmp-schema`` which arguments each takes and which it marks deprecated (``block-job-complete`` from
10.1, for one). The command list is asked once per QEMU; the schema only when something needs it (an argument
outside the seed's stable ones, a deprecation), and once per QEMU build in a process.
"""

from __future__ import annotations

import difflib
from typing import Any

from qblocknb.errors import UnknownCommand
from qblocknb.model.qmpargs import IMAGE_FORMATS, STABLE_ARGUMENTS
from qblocknb.model.sizes import parse_named_size

SIZE_ARGUMENTS = {"speed", "buf-size", "granularity"}
# The schema as read, per QEMU build (its greeting's version and package): a hundred VMs of one build read it once.
_READ: dict[str, tuple[dict[str, set[str]], set[str], set[str]]] = {}


class Schema:
    """The command list and argument names of one QEMU."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self._commands: set[str] | None = None
        self._arguments: dict[str, set[str]] | None = None
        self._deprecated: set[str] = set()
        self._drivers: set[str] = set()

    @property
    def commands(self) -> set[str]:
        """Every QMP command this QEMU knows (``query-commands``)."""
        if self._commands is None:
            self._commands = {c["name"] for c in self.session.execute("query-commands", record=False)}
        return self._commands

    @property
    def known(self) -> set[str]:
        """The commands, if they were asked for already; empty otherwise (for ``dir()``, which must not block)."""
        return self._commands or set()

    def accepts(self, command: str, names: set[str], fmt: str | None = None) -> bool:
        """True when every QEMU takes these argument names (and block format) for ``command``: then the
        pre-flight needs no schema. A backend that carries QMP out in another API has only its own schema."""
        stable = {} if getattr(self.session, "translates", False) else STABLE_ARGUMENTS
        return names <= stable.get(command, frozenset()) and (fmt is None or fmt in IMAGE_FORMATS)

    def arguments(self, command: str) -> set[str]:
        """The argument names QEMU's schema lists for ``command``."""
        if self._arguments is None:
            key = getattr(self.session, "build", None)
            if key is None or key not in _READ:
                read = _read(self.session.execute("query-qmp-schema", record=False))
                if key is not None:
                    _READ[key] = read
            self._arguments, self._deprecated, self._drivers = _READ[key] if key is not None else read
        return self._arguments.get(command, set())

    @property
    def drivers(self) -> set[str]:
        """Every block driver (image format or protocol) this QEMU knows: ``blockdev-add``'s ``driver`` values."""
        self.arguments("blockdev-add")
        return self._drivers

    def deprecated(self, command: str) -> bool:
        self.arguments(command)
        return command in self._deprecated

    def arguments_for(self, command: str, arguments: dict | None, kwargs: dict) -> dict:
        """The QMP arguments of a call: ``arguments`` as given, keywords renamed, sizes such as ``speed="4M"``
        turned into bytes."""
        merged = {**(arguments or {}), **self.qmp_arguments(command, kwargs)}
        for key in SIZE_ARGUMENTS & merged.keys():
            merged[key] = parse_named_size(merged[key], f"{command}: {key}")
        return merged

    def qmp_arguments(self, command: str, kwargs: dict) -> dict:
        """Map Python keywords to QMP names: ``job_id`` -> ``job-id`` unless QEMU spells it with ``_``."""
        if not kwargs:
            return {}
        # Only commands with legacy underscore names (block_set_io_throttle, ...) have underscore arguments;
        # asking the schema just for them keeps the common path to a plain rename.
        legacy = "_" in command and any("_" in key for key in kwargs)
        known = self.arguments(command) if legacy else set()
        return {key if key in known else key.replace("_", "-"): value for key, value in kwargs.items()}

    def unknown(self, command: str) -> UnknownCommand:
        """The error for a command QEMU does not have, with the nearest names it does have.

        A backend that carries out only some of QEMU's commands (libvirt's API) says itself why it lacks one.
        """
        close = difflib.get_close_matches(command, sorted(self.commands), n=3)
        why = getattr(self.session, "lacks", None)
        return UnknownCommand(
            *(why(command) if why else (f"QEMU has no command '{command}'", "query-commands does not list it")),
            f"did you mean {', '.join(close)}?" if close else "see vm.commands for the full list",
        )


def _read(schema: list[dict]) -> tuple[dict[str, set[str]], set[str], set[str]]:
    """Each command's argument names, the deprecated commands, and the block drivers, from ``query-qmp-schema``."""
    types = {entry["name"]: entry for entry in schema}
    arguments: dict[str, set[str]] = {}
    deprecated = set()
    for entry in schema:
        if entry.get("meta-type") == "command":
            members = types.get(entry.get("arg-type"), {}).get("members", [])
            arguments[entry["name"]] = {m["name"] for m in members}
            if "deprecated" in entry.get("features", []):
                deprecated.add(entry["name"])
    return arguments, deprecated, _enum_of(types, "blockdev-add", "driver")


def _enum_of(types: dict[str, dict], command: str, member: str) -> set[str]:
    """The values of an enum member of a command's arguments (type names are numbers in introspection)."""
    arg_type = types.get(types.get(command, {}).get("arg-type", ""), {})
    for entry in arg_type.get("members", []):
        if entry["name"] == member:
            return set(types.get(entry["type"], {}).get("values", []))
    return set()
