#!/bin/sh
# Installs what the test suite needs that cargo does not:
#
# - Debian's dnsmasq (package dnsmasq-base: the program alone, without the system
#   service the `dnsmasq` package would start on port 53), the real DNS server the DNS
#   tests start on a loopback port of their own;
# - Debian's systemd package for `systemd-socket-activate`, which the socket-activation
#   tests run;
# - a Python virtual environment with pyzmq (whose wheel carries libzmq 4.3.5), used as
#   the real-libzmq peer in the interop tests.
#
# Idempotent and safe to run from many test processes at once (each part under its own
# flock).
#
# `setup-test-env.sh dnsmasq` sets up dnsmasq only and prints its path on its last
# line; without an argument it sets up everything and prints the environment's python on its
# last line.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/target"

# Installs Debian package $2 unless command $1 exists. apt is machine-wide, so one
# machine-wide lock for every package, and the check repeated under it: parallel test
# processes install each package once. `apt-get update` runs once per machine (and once
# more if an install fails on package lists older than the mirror).
ensure_package() {
    if command -v "$1" >/dev/null 2>&1; then
        return
    fi
    (
        flock 8
        if ! command -v "$1" >/dev/null 2>&1; then
            if [ "$(id -u)" -ne 0 ]; then
                echo "setup-test-env.sh: $1 is missing and installing it needs root (apt-get install $2)" >&2
                exit 1
            fi
            export DEBIAN_FRONTEND=noninteractive
            if [ ! -e /tmp/lwmq-setup-apt-updated ]; then
                apt-get update -q >&2
                touch /tmp/lwmq-setup-apt-updated
            fi
            if ! apt-get install -y -q --no-install-recommends "$2" >&2; then
                apt-get update -q >&2
                apt-get install -y -q --no-install-recommends "$2" >&2
            fi
        fi
    ) 8>/tmp/lwmq-setup-apt.lock
    command -v "$1" >/dev/null 2>&1 || {
        echo "setup-test-env.sh: installing Debian's $2 package did not provide $1" >&2
        exit 1
    }
}

ensure_package dnsmasq dnsmasq-base
if [ "${1:-}" = dnsmasq ]; then
    command -v dnsmasq
    exit 0
fi
ensure_package systemd-socket-activate systemd

venv="${LWMQ_VENV:-$root/target/pyenv}"
pyzmq_version=26.2.0
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import zmq, sys; sys.exit(zmq.__version__ != '$pyzmq_version')" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "pyzmq==$pyzmq_version" >&2
fi
echo "$venv/bin/python"
