"""The second libvirt host is reached over a real ssh transport, with its key only, and is another host to libvirt."""

from __future__ import annotations

import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import libvirt_env
import second_host
from libvirt_env import libvirt
from second_host import uri, virsh2

conn, host2 = libvirt_env.conn, second_host.host2  # the fixtures, where pytest looks for them


def host_uuid(c: libvirt.virConnect) -> str:
    return ET.fromstring(c.getCapabilities()).findtext("host/uuid") or ""


def test_virsh_and_python_reach_it_over_ssh_and_it_is_another_host(conn, host2):
    assert urlsplit(uri()).scheme == "qemu+ssh"
    virsh2("list", "--all")
    assert virsh2("hostname").strip() == "qbhost2"
    assert host2.getHostname() == "qbhost2"
    assert host_uuid(host2) and host_uuid(conn), "both daemons have a host UUID"
    assert host_uuid(host2) != host_uuid(conn), "libvirt refuses to migrate between daemons of the same host UUID"
    assert host2.storagePoolLookupByName(second_host.POOL).isActive()


def test_without_its_key_the_connection_is_refused(host2, tmp_path: Path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    parts = urlsplit(uri())
    wrong = f"{parts.scheme}://{parts.netloc}{parts.path}?keyfile={other}"
    done = subprocess.run(["virsh", "-c", wrong, "list"], capture_output=True, text=True, timeout=30)
    assert done.returncode != 0, "a key the server does not know is refused"
    # Asking for a password as well: the server offers public keys only.
    ssh = ["ssh", "-p", str(parts.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-i", str(other)]
    ssh += ["-o", "PreferredAuthentications=password,keyboard-interactive,publickey", f"qbhost2@{parts.hostname}"]
    done = subprocess.run([*ssh, "true"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 255
    assert "Permission denied (publickey)" in done.stderr, done.stderr


def test_its_sshd_listens_on_its_loopback_address_only(host2):
    parts = urlsplit(uri())
    assert parts.hostname is not None and parts.hostname.startswith("127.")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", parts.port)) != 0, f"nothing answers on 127.0.0.1:{parts.port}"
