#!/usr/bin/env bash
# The README's test command: prepares what the tests need on this machine (the wasm
# targets — wasip2, and wasip1 for the core-module test — a Redis server, the openssl
# CLI, Node.js and Python for the Dapr SDK interop tests, the tansu Kafka broker), starting or
# installing only what is missing, then runs every test.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
have() { command -v "$1" >/dev/null 2>&1; }
apt_install() {
  have apt-get || { echo "tests/run.sh: install $* with your package manager, then run again" >&2; exit 1; }
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$@"
}

echo "== toolchain"
# rust-toolchain.toml pins the channel; an existing toolchain may lack the wasm target.
rustup target add wasm32-wasip2 wasm32-wasip1 >/dev/null 2>&1 || rustup target add wasm32-wasip2 wasm32-wasip1

echo "== redis (127.0.0.1:6379)"
if ! (have redis-cli && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  have redis-server && have redis-cli || apt_install redis-server redis-tools
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
redis-cli -h 127.0.0.1 -p 6379 ping

echo "== openssl (librdkafka links it; the Redis TLS test makes its certificate with it)"
have openssl || apt_install openssl
(have pkg-config && pkg-config --exists openssl) || apt_install pkg-config libssl-dev

echo "== node (the Dapr JS SDK interop test)"
have node && have npm || apt_install nodejs npm
node --version

echo "== python3 with venv (the Dapr Python SDK interop test makes target/interop-venv)"
have python3 || apt_install python3 python3-venv
python3 -m venv --help >/dev/null 2>&1 || apt_install python3-venv
python3 --version

echo "== tansu (the Kafka tests' broker)"
# A Kafka-protocol broker in Rust: no JVM Kafka can be fetched here. Built once per machine.
if ! have tansu; then
  cargo install tansu --version 0.6.0 --locked --features dynostore
fi

echo "== test"
cargo test "$@"
