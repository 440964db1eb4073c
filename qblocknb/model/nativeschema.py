"""What a libvirt-native connection understands, in the shape of QEMU's ``query-qmp-schema``.

The Machine learns what a backend can do the same way for every backend: ``query-commands`` lists the
commands, ``query-qmp-schema`` their arguments and the block drivers.  Over libvirt's API these are the
seed's intents that libvirt carries out, with the arguments it honours, so that a misspelt or unsupported
argument is refused before anything is sent, exactly as on QMP::

    >>> sorted(ARGUMENTS["block-stream"])
    ['base', 'base-node', 'device', 'job-id', 'speed']
    >>> entry = next(e for e in schema() if e["name"] == "block-stream")
    >>> entry["meta-type"], entry["arg-type"]
    ('command', 'block-stream-arg')
"""

from __future__ import annotations

JOB_VERB = ["device"]
ARGUMENTS: dict[str, list[str]] = {
    "blockdev-snapshot-sync": ["device", "node-name", "snapshot-file", "snapshot-node-name", "format", "mode"],
    "block-stream": ["job-id", "device", "base", "base-node", "speed"],
    "block-commit": ["job-id", "device", "base", "base-node", "top", "top-node", "speed"],
    "drive-mirror": ["job-id", "device", "target", "format", "sync", "mode", "speed", "granularity", "buf-size"],
    "blockdev-mirror": ["job-id", "device", "target", "sync", "speed", "granularity", "buf-size"],
    "drive-backup": ["job-id", "device", "target", "format", "sync", "mode", "bitmap", "speed"],
    "blockdev-backup": ["job-id", "device", "target", "sync", "bitmap", "speed"],
    "blockdev-add": ["driver", "node-name", "file"],
    "block-dirty-bitmap-add": ["node", "name", "persistent", "granularity", "disabled"],
    "transaction": ["actions", "properties"],
    "block-job-complete": JOB_VERB,
    "block-job-cancel": ["device", "force"],
    "block-job-set-speed": ["device", "speed"],
    "block-job-pause": JOB_VERB,
    "block-job-resume": JOB_VERB,
    "block-job-finalize": ["id"],
    "block-job-dismiss": ["id"],
    "job-complete": ["id"],
    "job-cancel": ["id"],
    "job-pause": ["id"],
    "job-resume": ["id"],
    "job-finalize": ["id"],
    "job-dismiss": ["id"],
    "query-commands": [],
    "query-qmp-schema": [],
    "query-block": [],
    "query-named-block-nodes": ["flat"],
    "query-block-jobs": [],
    "query-jobs": [],
    "query-status": [],
    "nbd-server-start": ["addr"],
    "nbd-server-add": ["device", "name", "writable"],
    "block-export-add": ["type", "id", "node-name", "name", "writable"],
    "block-export-del": ["id"],
    "nbd-server-stop": [],
    "cont": [],
    "stop": [],
    "quit": [],
}
COMMANDS = frozenset(ARGUMENTS)
DRIVERS = ["file", "qcow2", "raw"]


def schema() -> list[dict]:
    """``query-qmp-schema``'s entries for the commands above, and the ``blockdev-add`` drivers."""
    entries: list[dict] = [{"name": "str", "meta-type": "builtin", "json-type": "string"}]
    entries.append({"name": "BlockdevDriver", "meta-type": "enum", "values": DRIVERS})
    for command, arguments in ARGUMENTS.items():
        arg_type = f"{command}-arg"
        entries.append({"name": command, "meta-type": "command", "arg-type": arg_type, "ret-type": "str"})
        members = [{"name": name, "type": "BlockdevDriver" if name == "driver" else "str"} for name in arguments]
        entries.append({"name": arg_type, "meta-type": "object", "members": members})
    return entries
