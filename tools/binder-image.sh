#!/usr/bin/env bash
# Build binder/Dockerfile with podman, tagged qblocknb-binder, on a machine that has no Docker engine and
# cannot reach Docker Hub:
#   - podman, runc and debootstrap are installed with apt-get when missing (root only);
#   - /etc/containers/containers.conf gets runc, cgroupfs and no default rlimits only when a trial container
#     fails without them (crun refuses some hosts' cgroups, podman's default rlimits some hosts' limits);
#   - debian:bookworm-slim is stood in for by a `debootstrap --variant=minbase bookworm`, made once and cached
#     as $QBLOCKNB_BINDER_CACHE/binder-base.tar (default /var/lib/qblocknb), imported into podman's storage;
#   - the build uses the host's network and, for the build's RUN steps only, the host's /etc/ssl/certs mounted
#     read-only on /mnt (pip behind a TLS-inspecting proxy; not over the image's /etc/ssl/certs, where the
#     image's own ca-certificates must write its bundle); neither is stored in the image.
# Podman's layer cache keeps a second build fast: the apt and Python layers are reused unless binder/Dockerfile
# or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${QBLOCKNB_BINDER_IMAGE:-qblocknb-binder}
CACHE=${QBLOCKNB_BINDER_CACHE:-/var/lib/qblocknb}
BASE=docker.io/library/debian:bookworm-slim
MIRROR=${QBLOCKNB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CONF=/etc/containers/containers.conf

if [ "$(id -u)" -ne 0 ]; then
    echo "run this as root (podman's root storage, debootstrap): sudo make binder-image" >&2
    exit 1
fi
tools/system-packages.sh podman runc debootstrap

# The base image, made once: what debian:bookworm-slim is (minbase bookworm, with its updates and security
# suites, no apt lists).
if [ ! -s "$CACHE/binder-base.tar" ]; then
    echo "== making the base (debootstrap --variant=minbase bookworm) into $CACHE/binder-base.tar"
    mkdir -p "$CACHE"
    root=$(mktemp -d "$CACHE/base.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase bookworm "$root" "$MIRROR"
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$root" -cf "$CACHE/binder-base.tar.part" .
    mv "$CACHE/binder-base.tar.part" "$CACHE/binder-base.tar"
    rm -rf "$root"
    trap - EXIT
    podman image rm --force "$BASE" >/dev/null 2>&1 || true  # a new base: import it afresh
fi
if ! podman image exists "$BASE"; then
    echo "== importing $CACHE/binder-base.tar as $BASE"
    podman import --change 'CMD ["bash"]' "$CACHE/binder-base.tar" "$BASE"
fi

# A trial container tells whether this host needs podman's settings changed.
if ! podman run --rm --pull=never --network none "$BASE" true >/dev/null 2>&1; then
    if [ -e "$CONF" ]; then
        echo "podman cannot run a container here, and $CONF exists already: add to it, then run again:" >&2
        printf '  [containers]\n  default_ulimits = []\n  [engine]\n  runtime = "runc"\n  cgroup_manager = "cgroupfs"\n' >&2
        exit 1
    fi
    echo "== podman cannot run a container with its defaults here: writing $CONF (runc, cgroupfs, no default rlimits)"
    mkdir -p "$(dirname "$CONF")"
    cat >"$CONF" <<'EOF'
# Written by qblocknb's tools/binder-image.sh: crun refuses this host's cgroups, and podman's default rlimits
# exceed this host's limits.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
    podman run --rm --pull=never --network none "$BASE" true
fi

# The build context: the repository's files (tracked, and untracked ones git does not ignore), as a fresh
# clone on Binder has them; no .git, .venv or build/.
context=build/binder-context
rm -rf "$context"
mkdir -p "$context"
git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf - 2>/dev/null |
    tar -C "$context" -xf -

echo "== podman build -t $IMAGE (binder/Dockerfile)"
start=$(date +%s)
podman build --pull=never --network host -v /etc/ssl/certs:/mnt:ro \
    --build-arg NB_USER=jovyan --build-arg NB_UID=1000 \
    -f "$context/binder/Dockerfile" -t "$IMAGE" "$context"
echo "== $IMAGE built in $(($(date +%s) - start)) s, $(podman image inspect --format '{{.Size}}' "$IMAGE") bytes"
