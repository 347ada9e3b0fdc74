#!/usr/bin/env bash
# The test command: installs what the tests need (Tansu, an S3 server, the Python clients),
# then builds and runs every test of the workspace. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
# A full test run is not the edit-compile loop: incremental caches would only add gigabytes of
# disk on a fresh machine (the build and the fuzz build must both fit on it).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# Free disk in GiB where the build goes (a shared CI disk can be nearly full: say so up front).
free_gib() { df -Pk "${CARGO_TARGET_DIR:-target}" 2>/dev/null | awk 'NR==2 {print int($4/1048576)}'; }
mkdir -p "${CARGO_TARGET_DIR:-target}"
echo "[test] free disk: $(free_gib) GiB (a clean build and the fuzz build need about 15 GiB)"
if [ "$(free_gib)" -lt 15 ]; then
    echo "[test] WARNING: less than 15 GiB free; the build may fail with 'No space left on device'"
fi

./scripts/install-test-deps.sh

echo "[test] cargo nextest run --workspace (build first; a clean build takes a while)"
cargo nextest run --workspace --no-fail-fast "$@"

echo "[test] free disk after the suite: $(free_gib) GiB"
echo "[test] fuzzing each decoder briefly"
./scripts/fuzz.sh "${SAKURA_FUZZ_SECONDS:-30}"

echo "[test] done in $(( $(date +%s) - start )) s"
