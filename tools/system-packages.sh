#!/usr/bin/env bash
# Make sure Debian/Ubuntu packages are installed: install the missing ones when root, else say how.
set -euo pipefail
optional=0
if [ "${1:-}" = "--optional" ]; then  # install those this distribution has; say which it has not
    optional=1
    shift
fi
missing=()
for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=("python3-venv")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ $optional -eq 1 ]; then
    available=()
    for package in "${missing[@]}"; do
        if [ -n "$(apt-cache policy "$package" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]; then
            available+=("$package")
        else
            echo "Optional package $package is not offered here; what needs it will say so when used."
        fi
    done
    missing=("${available[@]}")
    [ ${#missing[@]} -eq 0 ] && exit 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "For the guest OS (notebook 08): sudo apt-get install -y ${missing[*]}"
        exit 0
    fi
fi
if [ "$(id -u)" -eq 0 ]; then
    echo "Installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "These system packages are missing: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    echo "then run make again." >&2
    exit 1
fi
