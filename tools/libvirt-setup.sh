#!/usr/bin/env bash
# Make libvirt usable by tests/test_libvirt.py: packages, libvirt-python in the venv, a running daemon.
# Idempotent and quick when everything is already there. Run as root (CI does, with no stdin).
#
#   tools/libvirt-setup.sh            # VENV=.venv by default; VENV=/path/to/venv to choose another
#
# Without systemd (containers, CI) the daemons are started by hand: virtlogd, then libvirtd.
# libvirt's default network is not needed (the test's domains have no network interface) and is not started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
URI=qemu:///system
say() { echo "libvirt-setup: $*"; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (it installs packages and starts libvirtd); try: sudo $0" >&2
    exit 1
fi

# -- packages ------------------------------------------------------------------------------------------
# libvirt-daemon-system brings the configuration, the libvirt-qemu user and the log folders. Its systemd
# flavour would pull in systemd itself, so without a running systemd the sysv flavour is chosen.
if [ -d /run/systemd/system ]; then
    flavour=libvirt-daemon-system-systemd
else
    flavour=libvirt-daemon-system-sysv
fi
packages=(qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    libvirt-daemon-system "$flavour" libvirt-dev pkg-config gcc)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d may refuse to start the daemon from the package scripts; it is started below either way.
    if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/libvirt-setup-apt.log 2>&1; then
        say "apt-get install failed; refreshing the package lists and trying again"
        apt-get update -q >>/tmp/libvirt-setup-apt.log 2>&1
        apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/libvirt-setup-apt.log 2>&1 || {
            tail -20 /tmp/libvirt-setup-apt.log >&2
            say "apt-get install failed; see /tmp/libvirt-setup-apt.log" >&2
            exit 1
        }
    fi
else
    say "packages present (${packages[*]})"
fi

# -- libvirt-python in the venv ------------------------------------------------------------------------
# The venv's Python is not Debian's, so python3-libvirt does not serve it: build libvirt-python from PyPI.
if [ ! -x "$VENV/bin/python" ]; then
    say "no venv at $VENV yet; making it (make $VENV/.installed)"
    make --no-print-directory "$VENV/.installed"
fi
if "$VENV/bin/python" -c 'import libvirt, libvirt_qemu' 2>/dev/null; then
    say "libvirt-python present in $VENV"
else
    say "building libvirt-python into $VENV (pip install libvirt-python)"
    "$VENV/bin/pip" install --quiet libvirt-python
fi

# -- daemons -------------------------------------------------------------------------------------------
answers() { timeout 10 virsh -c "$URI" list --name >/dev/null 2>&1; }  # `virsh version` takes 4 s
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if answers; then
    say "libvirtd already answers at $URI"
else
    mkdir -p /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt
    if [ -d /run/systemd/system ]; then
        say "starting libvirtd with systemctl"
        systemctl start virtlogd.socket libvirtd.socket libvirtd.service
    else
        if ! running /run/virtlogd.pid; then
            say "starting virtlogd --daemon"
            virtlogd --daemon
        fi
        if running /run/libvirtd.pid; then
            say "libvirtd runs (pid $(cat /run/libvirtd.pid)) but does not answer yet; waiting"
        else
            say "starting libvirtd --daemon"
            libvirtd --daemon
        fi
    fi
    for _ in $(seq 150); do
        answers && break
        sleep 0.2
    done
    if ! answers; then
        tail -20 /var/log/libvirt/libvirtd.log >&2 2>/dev/null || true
        say "libvirtd does not answer at $URI after 30 s; see /var/log/libvirt/libvirtd.log" >&2
        exit 1
    fi
fi

# The default network needs dnsmasq and a bridge; nothing here uses it, so it must not autostart.
if virsh -c "$URI" net-info default 2>/dev/null | grep -q '^Autostart:.*yes'; then
    say "turning off autostart of libvirt's default network (not needed)"
    virsh -c "$URI" net-autostart default --disable >/dev/null
fi

versions="$(libvirtd --version | awk '{print "libvirt " $NF}'), $(qemu-system-x86_64 --version | head -1 | awk '{print "QEMU " $4}')"
python_version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("libvirt-python"))' 2>/dev/null || echo "?")
say "ready: ${versions} at $URI; libvirt-python $python_version in $VENV"
