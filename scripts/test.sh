#!/usr/bin/env bash
# The test command: installs what the tests need (Tansu, an S3 server, the Python clients),
# then builds and runs every test of the workspace. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
./scripts/install-test-deps.sh

echo "[test] cargo nextest run --workspace (build first; a clean build takes a while)"
cargo nextest run --workspace --no-fail-fast "$@"

echo "[test] fuzzing each decoder briefly"
./scripts/fuzz.sh "${SAKURA_FUZZ_SECONDS:-30}"

echo "[test] done in $(( $(date +%s) - start )) s"
