"""HMP command lines built with names and paths as data: every word quoted the way HMP reads it.

HMP splits its line on spaces and reads ``"..."`` with the escapes ``\\"``, ``\\\\``, ``\\n`` and ``\\r``;
a device path, a node name or a qemu-io command put in quotes this way stays one word whatever it holds, so
no name can end a word early and add a word (or a qemu-io command) of its own::

    >>> qemu_io("/machine/peripheral/virtio0/virtio-backend", "write -P 0xab 0 65536", qdev=True)
    'qemu-io -d "/machine/peripheral/virtio0/virtio-backend" "write -P 0xab 0 65536"'
    >>> quote('node" "flush')
    '"node\\\\" \\\\"flush"'
"""

from __future__ import annotations

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}


def quote(word: str) -> str:
    """``word`` as one HMP string argument."""
    return '"' + "".join(_ESCAPES.get(char, char) for char in word) + '"'


def qemu_io(target: str, command: str, qdev: bool = False) -> str:
    """The HMP ``qemu-io`` line running ``command`` on a node or device (``qdev=True``: a qdev path, ``-d``)."""
    return f"qemu-io {'-d ' if qdev else ''}{quote(target)} {quote(command)}"
