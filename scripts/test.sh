#!/usr/bin/env bash
# Install what the test suite needs, start the services it uses, run it.
# Usage: scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages the tests use: real Redis and RabbitMQ servers, nginx (nginx plugin),
# prosody (private XMPP servers for the xmpp channel).
PACKAGES=(python3-venv redis-server rabbitmq-server nginx prosody)
missing=()
for package in "${PACKAGES[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing ${missing[*]}"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for_port() {
    local port=$1 name=$2
    for _ in $(seq 1 120); do
        port_open "$port" && return 0
        sleep 0.5
    done
    echo "$name did not start listening on port $port" >&2
    return 1
}

if ! port_open 6379; then
    echo "Starting redis-server on 127.0.0.1:6379"
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
    wait_for_port 6379 redis-server
fi
if ! port_open 5672; then
    echo "Starting rabbitmq-server on 127.0.0.1:5672"
    $SUDO rabbitmq-server -detached
    wait_for_port 5672 rabbitmq-server
fi

status=0
.venv/bin/pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit "$status"
