#!/usr/bin/env bash
# Every test ustack has, on a fresh Debian 12 machine with the Rust toolchain,
# as root: installs the system packages the tests use, then runs unit,
# property, simulation and real-peer tests, and a short fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "== installing test peers (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The package lists live in scripts/packages.d/*.txt, one package a line.
  mapfile -t packages < <(cat scripts/packages.d/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
  apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
else
  echo "== not root (or no apt): real-peer tests will report themselves skipped"
fi

echo "== cargo test (workspace)"
cargo test --workspace --all-targets --locked

# The dpdk: device kind is a feature build (against libdpdk-dev): its test
# file again with the feature, rebuilding only the crates above the device.
if pkg-config --exists libdpdk 2>/dev/null; then
  echo "== cargo test: dpdk: on DPDK's net_tap (--features dpdk)"
  cargo test --locked -p ustack --features dpdk --test dpdk
else
  echo "== DPDK not installed (libdpdk-dev): the dpdk feature build is skipped"
fi

# Issue 15's bound: the IPv4 request/response path costs at most 3% more
# instructions than before the core's reshaping (deterministic, callgrind).
if command -v valgrind >/dev/null; then
  echo "== callgrind: IPv4 rr instructions within 3% of the reshaping's baseline"
  bash scripts/callgrind-rr.sh --check
else
  echo "== valgrind not installed: the IPv4 rr instruction-count check is skipped"
fi

echo "== fuzz: build the receive-path target and run it briefly"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
