"""NBD and network names, spelled once: host brackets, ``tcp:`` URIs, the seed's ``nbd:`` targets.

>>> address("::1", 10809), tcp_uri("10.0.0.2", 4444)
('[::1]:10809', 'tcp:10.0.0.2:4444')
>>> seed_target("127.0.0.1", 10809, "node-TargetDisk")
'nbd:127.0.0.1:10809:exportname=node-TargetDisk'
>>> nbd_uri(seed_target("127.0.0.1", 10809, "node-TargetDisk"))
'nbd://127.0.0.1:10809/node-TargetDisk'
>>> is_protocol("nbd:127.0.0.1:10809"), is_protocol("backups/e.qcow2")
(True, False)
"""

from __future__ import annotations

import json
import re

NBD_PORT = 10809  # IANA's port for NBD


def is_ipv6(host: str) -> bool:
    return ":" in host


def bracketed(host: str) -> str:
    """``[::1]`` for an IPv6 address, other hosts as they are: how a host goes before ``:PORT``."""
    return f"[{host}]" if is_ipv6(host) else host


def address(host: str, port: int | str) -> str:
    return f"{bracketed(host)}:{port}"


def tcp_uri(host: str, port: int | str) -> str:
    """``tcp:10.0.0.2:4444`` or ``tcp:[::1]:4444``, as ``-incoming`` and ``migrate`` take it."""
    return f"tcp:{address(host, port)}"


def seed_target(host: str, port: int | str, export: str) -> str:
    """The seed's mirror target ``nbd:HOST:PORT:exportname=EXPORT`` (IPv4 and names only)."""
    return f"nbd:{host}:{port}:exportname={export}"


def mirror_target(host: str, port: int | str, export: str, tls_creds: str | None = None) -> str:
    """A mirror's NBD target: the seed's ``nbd:`` form where it can say it, else ``json:`` (TLS, IPv6).

    >>> mirror_target("::1", 10809, "disk")
    'json:{"driver": "nbd", "server": {"type": "inet", "host": "::1", "port": "10809"}, "export": "disk"}'
    """
    if tls_creds is None and not is_ipv6(host):
        return seed_target(host, port, export)
    options: dict = {"driver": "nbd", "server": {"type": "inet", "host": host, "port": str(port)}, "export": export}
    if tls_creds:
        options["tls-creds"] = tls_creds
    return "json:" + json.dumps(options)


def is_nbd(name: str) -> bool:
    return name.startswith(("nbd:", "nbd+"))


def is_protocol(name: str) -> bool:
    """A target given as ``protocol:...`` (``nbd:host:port``), not as a file path."""
    return ":" in name.split("/")[0]


def nbd_uri(name: str) -> str:
    """The seed's ``nbd:HOST:PORT:exportname=X`` in the URI form QEMU reports for the node; other names unchanged."""
    match = re.fullmatch(r"nbd:([^:\[\]]+|\[[^\]]+\]):(\d+)(?::exportname=(.*))?", name)
    if not match:
        return name
    host, port, export = match.groups()
    return f"nbd://{host}:{port}/{export or ''}"
