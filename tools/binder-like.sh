#!/usr/bin/env bash
# Run the notebooks as Binder would: a user who is not root and cannot open /dev/kvm, with a Python
# and a venv of its own, and no QBLOCKNB_ACCEL (the toolkit itself must find that KVM is out of reach).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "run this as root: it makes the unprivileged user the notebooks then run as" >&2
    exit 1
fi
user=qbnbinder
id -u "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user"
home=$(getent passwd "$user" | cut -d: -f6)
/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || apt-get install -y -q --no-install-recommends python3-venv
copy="$home/qblocknb"
rm -rf "$copy"
mkdir -p "$copy"
tar --exclude=./.venv --exclude=./build --exclude=./.git -cf - . | tar -C "$copy" -xf -
chown -R "$user:" "$copy"
echo "== as $(runuser -u "$user" -- id)"
runuser -u "$user" -- bash -c 'test -r /dev/kvm -a -w /dev/kvm && echo "/dev/kvm: usable" || echo "/dev/kvm: not usable by this user"'
runuser -u "$user" -- env -u QBLOCKNB_ACCEL QBLOCKNB_NOTEBOOK_ACCEL= bash -c '
    set -euo pipefail
    cd "$HOME/qblocknb"
    /usr/bin/python3 -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip
    .venv/bin/pip install --quiet -e ".[test]"
    .venv/bin/pytest -p no:cacheprovider -m notebooks tests/test_notebooks.py -rA
'
