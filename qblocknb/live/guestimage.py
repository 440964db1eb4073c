"""The test guest's boot files: a Debian kernel and an initramfs we write ourselves.

Block jobs need no guest, but a guest that writes its own data while a job runs
shows what a job does to live I/O.  The guest is built from what the host already
has, nothing downloaded: the kernel of ``linux-image-amd64`` (``/boot/vmlinuz-*``),
``busybox-static``, and the kernel modules a virtio disk needs, found through
``modules.dep``.  The initramfs is a gzip-compressed cpio "newc" archive written
here, so no cpio tool is needed; it is cached per kernel, busybox and script, so a
later launch only checks that the cache is there::

    >>> archive = Archive()
    >>> archive.file("init", b"#!/bin/sh\\n", 0o755)
    >>> archive.bytes()[:6]
    b'070701'
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qblocknb.errors import Error

BUSYBOX = Path("/bin/busybox")
BOOT = Path("/boot")
MODULES = Path("/lib/modules")
DISK_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod")
PACKAGES = ("linux-image-amd64", "busybox-static")

INIT = r"""#!/bin/busybox sh
# qblocknb's test guest: mount the basics, load the disk drivers, give ttyS0 to a quiet shell.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
dmesg -n 1
for module in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$module" || echo "qblocknb: insmod $module failed"
done
export ENV=/etc/profile
while :; do  # PID 1 must not exit: a shell that dies is replaced
    setsid sh -c 'exec sh -i </dev/ttyS0 >/dev/ttyS0 2>&1'
done
"""

PROFILE = r"""# The serial shell talks to a program: no prompt, no echo, then the ready marker.
PS1=''
PS2=''
stty -echo
echo __qbn_READY
"""

WRITER = r"""#!/bin/sh
# qbn-writer SIZE RECORD OFFSET PAUSE_US: numbered records over /dev/vda, round after round.
# Prints "S i r" before and "W i r" after each write on ttyS1; stops at a record boundary once
# /tmp/qbn-stop exists ("X"), or after a failed write ("F i r").
size=$1 record=$2 offset=$3 pause=$4
count=$((size / record))
exec 3>/dev/ttyS1
round=0
while :; do
    i=0
    while [ $i -lt $count ]; do
        [ -e /tmp/qbn-stop ] && { echo X >&3; exit 0; }
        echo "S $i $round" >&3
        if ! yes "qblocknb record $i round $round" | head -c "$record" |
            dd of=/dev/vda bs="$record" count=1 seek=$((offset + i * record)) \
                iflag=fullblock oflag=seek_bytes conv=notrunc,fsync 2>/dev/null; then
            echo "F $i $round" >&3
            exit 1
        fi
        echo "W $i $round" >&3
        [ "$pause" -gt 0 ] && usleep "$pause"
        i=$((i + 1))
    done
    round=$((round + 1))
done
"""


@dataclass(frozen=True)
class BootFiles:
    """What ``-kernel`` and ``-initrd`` get."""

    kernel: Path
    initrd: Path
    version: str


class GuestImageError(Error):
    """The guest's kernel, modules or busybox are missing or unusable."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/qblocknb``, else ``~/.cache/qblocknb``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qblocknb"


def boot_files() -> BootFiles:
    """The kernel and a cached initramfs for it; built on first use (a second or two), then reused."""
    version, kernel = find_kernel()
    busybox = find_busybox()
    key = hashlib.sha256()
    for part in (version.encode(), INIT.encode(), PROFILE.encode(), WRITER.encode(), busybox.read_bytes()):
        key.update(hashlib.sha256(part).digest())
    initrd = cache_dir() / f"guest-{version}-{key.hexdigest()[:12]}.cpio.gz"
    if not initrd.exists():
        initrd.parent.mkdir(parents=True, exist_ok=True)
        partial = initrd.with_suffix(f".{os.getpid()}.tmp")
        partial.write_bytes(gzip.compress(build_archive(version, busybox).bytes(), compresslevel=6))
        partial.replace(initrd)  # atomic: a concurrent launch sees a whole file or none
    return BootFiles(kernel, initrd, version)


def find_kernel() -> tuple[str, Path]:
    """The newest ``/boot/vmlinuz-VERSION`` this user can read that has its modules installed."""
    candidates = []
    for path in BOOT.glob("vmlinuz-*"):
        version = path.name.removeprefix("vmlinuz-")
        if os.access(path, os.R_OK) and (MODULES / version / "modules.dep").exists():
            candidates.append((_version_key(version), version, path))
    if not candidates:
        present = sorted(p.name for p in BOOT.glob("vmlinuz-*"))
        found = f"{', '.join(present)}: unreadable, or without modules" if present else "there is no vmlinuz-*"
        raise GuestImageError(
            "the test guest needs a readable Linux kernel in /boot with its modules in /lib/modules",
            f"{found} (Ubuntu keeps /boot/vmlinuz-* readable by root only)",
            "install one with: sudo apt-get install linux-image-amd64 (on Ubuntu linux-image-generic, then "
            "sudo chmod 0644 /boot/vmlinuz-*); block jobs themselves need no guest",
        )
    return max(candidates)[1:]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version))


def find_busybox() -> Path:
    """The static busybox that becomes the guest's whole user space."""
    if not os.access(BUSYBOX, os.X_OK):
        raise GuestImageError(
            "the test guest needs a static busybox at /bin/busybox",
            "it is missing or not executable",
            "install it with: sudo apt-get install busybox-static",
        )
    return BUSYBOX


def module_order(version: str, names: tuple[str, ...] = DISK_MODULES) -> list[str]:
    """Relative paths of the modules ``names`` need, dependencies first; built-in ones are left out."""
    root = MODULES / version
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (root / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
        by_name[_module_name(module)] = module
    builtin_file = root / "modules.builtin"
    builtin = {_module_name(line) for line in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[str] = []

    def visit(module: str) -> None:
        if module in order:
            return
        for needed in deps.get(module, []):
            visit(needed)
        order.append(module)

    for name in names:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in by_name:
            raise GuestImageError(
                f"kernel {version} has no module {name} for the guest's disk",
                "modules.dep does not list it and modules.builtin does not either",
                "install a distribution kernel such as linux-image-amd64",
            )
        visit(by_name[key])
    return order


def _module_name(path: str) -> str:
    return re.sub(r"\.ko(\.\w+)?$", "", Path(path).name).replace("-", "_")


def read_module(path: Path) -> bytes:
    """A module's ELF bytes; ``.ko.xz``, ``.ko.gz`` and ``.ko.zst`` are decompressed (insmod takes plain ``.ko``)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        zstd = shutil.which("zstd")
        if zstd is None:
            raise GuestImageError(
                f"kernel module {path.name} is zstd-compressed",
                "Python's standard library cannot decompress zstd before 3.14 and no zstd tool is on PATH",
                "install it with: sudo apt-get install zstd",
            )
        return subprocess.run([zstd, "-dc", str(path)], capture_output=True, check=True).stdout
    return data


def build_archive(version: str, busybox: Path) -> Archive:
    """The initramfs: busybox, /init, the shell's profile, the writer, and the disk modules in load order."""
    archive = Archive()
    for folder in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "etc", "lib"):
        archive.directory(folder)
    archive.directory("lib/modules")
    archive.device("dev/console", 5, 1)  # the kernel opens it for /init's stdio before devtmpfs is mounted
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", INIT.encode(), 0o755)
    archive.file("etc/profile", PROFILE.encode(), 0o644)
    archive.file("bin/qbn-writer", WRITER.encode(), 0o755)
    names = []
    for module in module_order(version):
        name = _module_name(module) + ".ko"
        archive.file(f"lib/modules/{name}", read_module(MODULES / version / module), 0o644)
        names.append(name)
    archive.file("lib/modules/load-order", ("\n".join(names) + "\n").encode(), 0o644)
    return archive


class Archive:
    """A cpio archive in the "newc" format the kernel unpacks (see the kernel's initramfs buffer format)."""

    def __init__(self) -> None:
        self._out = io.BytesIO()
        self._inode = 1

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, b"", rdev=(major, minor))

    def bytes(self) -> bytes:
        """The archive with its trailer."""
        return self._out.getvalue() + _header(0, 0, 1, 0, b"TRAILER!!!", (0, 0))

    def _entry(self, name: str, mode: int, data: bytes, nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        self._out.write(_header(self._inode, mode, nlink, len(data), name.encode(), rdev))
        self._out.write(data + _padding(len(data)))
        self._inode += 1


def _header(inode: int, mode: int, nlink: int, size: int, name: bytes, rdev: tuple[int, int]) -> bytes:
    fields = (inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    header = b"070701" + b"".join(b"%08X" % field for field in fields) + name + b"\0"
    return header + _padding(len(header))


def _padding(length: int) -> bytes:
    return b"\0" * (-length % 4)


def main() -> None:
    """``python -m qblocknb.live.guestimage``: as root, install the missing packages; then build and print the files."""
    if os.geteuid() == 0 and shutil.which("apt-get"):
        missing = [p for p, ok in zip(PACKAGES, (_has_kernel(), BUSYBOX.exists()), strict=False) if not ok]
        if missing:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True, env=env)
    try:
        files = boot_files()
    except Error as error:
        sys.exit(str(error))
    print(f"kernel {files.kernel}\ninitrd {files.initrd}")


def _has_kernel() -> bool:
    try:
        find_kernel()
    except GuestImageError:
        return False
    return True


if __name__ == "__main__":
    main()
