#!/bin/sh
# Installs what the test suite needs that cargo does not: a Python virtual environment
# with pyzmq (whose wheel carries libzmq 4.3.5), used as the real-libzmq peer in the
# interop tests, and `systemd-socket-activate` (Debian's systemd package) for the
# socket-activation tests. Idempotent and safe to run from many test processes at once.
#
# Prints the path of the environment's python on its last line.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)

# systemd-socket-activate: one machine-wide lock (apt is machine-wide too), and the
# check repeated under it, so parallel test processes install it once.
if ! command -v systemd-socket-activate >/dev/null 2>&1; then
    (
        exec 8>/tmp/lwmq-setup-systemd.lock
        flock 8
        if ! command -v systemd-socket-activate >/dev/null 2>&1; then
            export DEBIAN_FRONTEND=noninteractive
            apt-get update >&2
            apt-get install -y --no-install-recommends systemd >&2
        fi
    )
    command -v systemd-socket-activate >/dev/null 2>&1 || {
        echo "setup-test-env.sh: installing Debian's systemd package did not provide systemd-socket-activate" >&2
        exit 1
    }
fi
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
