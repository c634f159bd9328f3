#!/bin/sh
# Build the patched launcher and v3 router in a patched TGI v3.3.7 tree (the current folder): the Rust stage
# of patches/Dockerfile (PROFILE=release-opt) and scripts/build_tgi.py (PROFILE=dev, for tests) both run this.
#   PROFILE=release-opt sh build-binaries.sh       # binaries in $CARGO_TARGET_DIR (target)/<profile folder>
# --locked: exactly TGI's Cargo.lock, fetching crates as needed (--frozen would also forbid the network, and
# nothing is fetched beforehand). protoc comes from PATH or $PROTOC; pyo3 needs Python's headers ($PYO3_PYTHON).
set -eu
exec cargo build --locked --profile "${PROFILE:-release-opt}" -p text-generation-launcher -p text-generation-router-v3
