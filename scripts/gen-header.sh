#!/usr/bin/env bash
# Regenerate crates/capi/include/ustack.h from crates/capi/src/ffi.rs with
# cbindgen (the crate, a dev-dependency of crates/capi; settings in
# crates/capi/cbindgen.toml). crates/capi/tests/header.rs fails in CI while
# the checked-in header differs from what this writes.
set -euo pipefail
cd "$(dirname "$0")/.."
USTACK_BLESS_HEADER=1 cargo test -p ustack-capi --test header "$@"
git --no-pager diff --stat -- crates/capi/include/ustack.h
