#!/usr/bin/env bash
# A second libvirt host on this machine, reached over ssh: for live storage migration between two daemons
# (tests/test_libvirt_migration.py) and views over several daemons. Prints its URI on stdout (and keeps it in
# /var/lib/qblocknb/host2/uri). Idempotent and quick when it already answers. Run as root, after
# tools/libvirt-setup.sh (CI does both, with no stdin).
#
# The second host is a system libvirtd (with its own virtlogd) in its own mount and UTS namespaces: its
# /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt are folders under
# /var/lib/qblocknb/host2, /run/libvirt is its own tmpfs, its hostname is qbhost2 and its host UUID its own
# (libvirt refuses a migration between daemons with the same host UUID). The network namespace is shared,
# so both QEMUs meet on loopback: the destination's migration and NBD ports listen on 127.0.0.2 only.
# QEMU runs as root on both sides (the test domains have a static DAC label), so both may open /dev/kvm.
# An sshd in the same namespaces listens on 127.0.0.2:2222 only and lets one user in, qbhost2 (member of the
# libvirt group, which owns that daemon's socket), with one key: /var/lib/qblocknb/host2/key/id_ed25519.
# The client checks the server's host key against key/known_hosts (set for 127.0.0.2 in
# /etc/ssh/ssh_config.d/qblocknb-host2.conf); nothing goes into root's ~/.ssh.
# Destination disks go under /var/lib/qblocknb/host2/images, a storage pool (qblocknb-host2) there, so
# libvirt creates each destination image before a copy-storage migration.
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=/var/lib/qblocknb/host2
KEYS=$BASE/key
ADDRESS=127.0.0.2
PORT=2222
USER2=qbhost2
URI="qemu+ssh://$USER2@$ADDRESS:$PORT/system?keyfile=$KEYS/id_ed25519"
POOL=qblocknb-host2
say() { echo "libvirt-second-host: $*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    say "must run as root (it adds a user, mounts folders and starts daemons); try: sudo $0"
    exit 1
fi

# -- inside the new namespaces: mount the host's own folders, start its daemons ----------------------------
if [ "${1:-}" = --inside ]; then
    hostname "$USER2"
    for pair in etc:/etc/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
        mount --bind "$BASE/${pair%%:*}" "${pair#*:}"
    done
    mount -t tmpfs -o mode=0755 tmpfs /run/libvirt
    # No D-Bus: its domains must not register with systemd-machined, where the first host's domain of the
    # same name and id is already registered.
    export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/libvirt/no-dbus
    virtlogd --daemon --pid-file "$BASE/pids/virtlogd.pid"
    libvirtd --daemon --pid-file "$BASE/pids/libvirtd.pid"
    mkdir -p /run/sshd
    /usr/sbin/sshd -f "$BASE/sshd_config" -E "$BASE/log/sshd.log"
    exit 0
fi

answers() { timeout 10 virsh -c "$URI" list --name >/dev/null 2>&1; }
if [ -f "$BASE/uri" ] && answers; then
    say "already answers at $URI"
    echo "$URI"
    exit 0
fi
command -v libvirtd >/dev/null || {
    say "libvirtd is not installed; run tools/libvirt-setup.sh first"
    exit 1
}

# -- sshd's binary (the distribution's own sshd service is neither started nor enabled) ---------------------
if ! dpkg-query -W -f='${Status}' openssh-server 2>/dev/null | grep -q "install ok installed"; then
    say "installing openssh-server (for its binary)"
    export DEBIAN_FRONTEND=noninteractive
    marker=/etc/ssh/sshd_not_to_be_run  # honoured by Debian's init script and unit: no sshd on port 22
    mkdir -p /etc/ssh
    [ -e $marker ] || { touch $marker && trap 'rm -f $marker' EXIT; }
    { apt-get install -y -q --no-install-recommends openssh-server ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends openssh-server; }; } \
        >/tmp/libvirt-second-host-apt.log 2>&1 || {
        tail -20 /tmp/libvirt-second-host-apt.log >&2
        say "apt-get install openssh-server failed; see /tmp/libvirt-second-host-apt.log"
        exit 1
    }
    if [ -d /run/systemd/system ]; then
        systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    else
        update-rc.d ssh disable >/dev/null 2>&1 || true
    fi
fi

# -- the user ssh lets in, and the files -------------------------------------------------------------------
if ! id "$USER2" >/dev/null 2>&1; then
    say "adding user $USER2 (group libvirt, no password)"
    useradd --system --create-home --home-dir "$BASE/home" --shell /bin/sh --groups libvirt "$USER2"
fi
usermod --password '*' "$USER2"  # useradd's "!" means locked, and sshd without PAM refuses a locked account
install -d -m 0755 /var/lib/qblocknb
install -d -m 0711 "$BASE"
install -d -m 0700 "$KEYS" "$BASE/etc" "$BASE/lib" "$BASE/cache" "$BASE/log" "$BASE/pids"
install -d -m 0711 "$BASE/images"
install -d -m 0700 -o "$USER2" -g "$USER2" "$BASE/home" "$BASE/home/.ssh"
[ -f "$KEYS/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "qblocknb host2 client" -f "$KEYS/id_ed25519"
[ -f "$KEYS/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C "qbhost2" -f "$KEYS/ssh_host_ed25519_key"
install -m 0600 -o "$USER2" -g "$USER2" "$KEYS/id_ed25519.pub" "$BASE/home/.ssh/authorized_keys"
echo "[$ADDRESS]:$PORT $(cut -d' ' -f1,2 "$KEYS/ssh_host_ed25519_key.pub")" >"$KEYS/known_hosts"
cat >/etc/ssh/ssh_config.d/qblocknb-host2.conf <<EOF
# qblocknb's second libvirt host (tools/libvirt-second-host.sh): its host key is checked against this file.
Host $ADDRESS
    UserKnownHostsFile $KEYS/known_hosts
    StrictHostKeyChecking yes
    IdentitiesOnly yes
EOF
cat >"$BASE/sshd_config" <<EOF
# The second libvirt host's sshd: loopback only, one user, keys only.
ListenAddress $ADDRESS:$PORT
HostKey $KEYS/ssh_host_ed25519_key
PidFile $BASE/pids/sshd.pid
AllowUsers $USER2
PermitRootLogin no
PubkeyAuthentication yes
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitTTY no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
EOF
[ -f "$BASE/etc/host_uuid" ] || cat /proc/sys/kernel/random/uuid >"$BASE/etc/host_uuid"
cat >"$BASE/etc/libvirtd.conf" <<EOF
# qbhost2: its own host UUID, and its socket open to the libvirt group (qbhost2 logs in over ssh).
host_uuid = "$(cat "$BASE/etc/host_uuid")"
unix_sock_group = "libvirt"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
EOF
cat >"$BASE/etc/qemu.conf" <<EOF
# qbhost2: incoming migrations and their NBD servers on $ADDRESS only, on ports of their own; no cgroups
# (the first host's domains of the same name and id would share their folders); no AppArmor profiles (they
# are named after the domain's UUID, so the destination's would replace the source's during a migration).
migration_address = "$ADDRESS"
migration_host = "$ADDRESS"
migration_port_min = 49300
migration_port_max = 49363
cgroup_controllers = [ ]
security_driver = "none"
EOF

# -- the namespaces and their daemons ----------------------------------------------------------------------
for daemon in sshd libvirtd virtlogd; do  # leftovers of an earlier run that stopped answering
    pidfile=$BASE/pids/$daemon.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        say "stopping the earlier $daemon (pid $(cat "$pidfile"))"
        kill "$(cat "$pidfile")"
    fi
    rm -f "$pidfile"
done
say "starting virtlogd, libvirtd and sshd in their own mount and UTS namespaces"
unshare --mount --uts --propagation private "$0" --inside
for _ in $(seq 150); do
    answers && break
    sleep 0.2
done
answers || {
    tail -5 "$BASE/log/libvirtd.log" "$BASE/log/sshd.log" >&2 2>/dev/null || true
    say "the second host does not answer at $URI after 30 s; see $BASE/log"
    exit 1
}
if ! virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1; then
    virsh -c "$URI" pool-define-as "$POOL" dir --target "$BASE/images" >/dev/null
    virsh -c "$URI" pool-autostart "$POOL" >/dev/null
fi
virsh -c "$URI" pool-start "$POOL" >/dev/null 2>&1 || true  # already active after an autostart
echo "$URI" >"$BASE/uri"
say "ready: $(virsh -c "$URI" hostname) (host UUID $(cat "$BASE/etc/host_uuid")) at $URI"
echo "$URI"
