"""x509 credentials for QEMU's NBD server and migration stream.

NBD without TLS is unauthenticated: anyone who can reach the port can read
and, with ``writable: true``, overwrite the exported disk.  QEMU's
``tls-creds-x509`` object reads a folder with fixed file names; the server side
needs ``ca-cert.pem``, ``server-cert.pem`` and ``server-key.pem``, the client side
``ca-cert.pem`` and (when the server verifies peers) ``client-cert.pem`` and
``client-key.pem``.  ``make_credentials`` writes such a folder with ``openssl``
for a rehearsal, valid for the addresses clients will dial; real deployments
bring their own CA::

    >>> subject_names(["10.199.0.2", "localhost"])
    'IP:10.199.0.2,DNS:localhost'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from qblocknb.errors import InputError
from qblocknb.live.tools import run

if TYPE_CHECKING:
    from qblocknb.live.machine import Machine

SERVER_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem")
CLIENT_FILES = ("ca-cert.pem", "client-cert.pem", "client-key.pem")
EXTENSIONS = (
    "basicConstraints=CA:FALSE\n"
    "keyUsage=digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName={names}\n"
)


def subject_names(hosts: Iterable[str]) -> str:
    """``IP:10.0.0.1,DNS:localhost``: the names a client checks the server certificate against."""
    names = []
    for host in hosts:
        try:
            names.append(f"IP:{ipaddress.ip_address(host)}")
        except ValueError:
            names.append(f"DNS:{host}")
    return ",".join(names)


def make_credentials(folder: str | Path, hosts: Iterable[str] = ("127.0.0.1", "localhost"), days: int = 2) -> Path:
    """Write a throw-away CA and server/client certificates valid for ``hosts`` into ``folder``."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    valid = ["-days", str(days)]

    def openssl(*args: str) -> None:
        run("openssl", *args, what=f"making x509 credentials in {path}", cwd=path)

    openssl("req", "-x509", *key, *valid, "-keyout", "ca-key.pem", "-out", "ca-cert.pem", "-subj", "/CN=qblocknb CA")
    (path / "extensions.cnf").write_text(EXTENSIONS.format(names=subject_names(hosts)))
    for role in ("server", "client"):
        openssl("req", *key, "-keyout", f"{role}-key.pem", "-out", f"{role}.csr", "-subj", f"/CN=qblocknb {role}")
        signing = ["-CA", "ca-cert.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-extfile", "extensions.cnf"]
        openssl("x509", "-req", "-in", f"{role}.csr", *signing, *valid, "-out", f"{role}-cert.pem")
    return path


def add_credentials(vm: Machine, folder: str | Path, endpoint: str, object_id: str = "tls0") -> str:
    """``object-add tls-creds-x509`` on one QEMU; the server side also verifies its client's certificate."""
    path = Path(folder).resolve()
    needed = SERVER_FILES if endpoint == "server" else CLIENT_FILES
    missing = [name for name in needed if not (path / name).exists()]
    if missing:
        raise InputError(
            f"TLS credentials in {path} are incomplete for the {endpoint} side",
            f"{', '.join(missing)} missing",
            "make them with qb.tls.make_credentials(folder, hosts=[...]) or copy your CA's files there",
        )
    arguments = {"qom-type": "tls-creds-x509", "id": object_id, "dir": str(path), "endpoint": endpoint}
    if endpoint == "server":
        arguments["verify-peer"] = True
    vm.execute("object-add", arguments)
    return object_id
