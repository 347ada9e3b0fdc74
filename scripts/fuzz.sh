#!/usr/bin/env bash
# Fuzzes each decoder (JSON, Protobuf) for SECONDS seconds (default 30) with cargo-fuzz
# (libFuzzer, nightly Rust). The test command runs it after the test suite.
#
#   ./scripts/fuzz.sh          # 30 s per target
#   ./scripts/fuzz.sh 600      # longer, e.g. before a release
#
# New interesting inputs go to a scratch corpus (the seeds in fuzz/corpus/ stay as they are);
# a crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
tools="$PWD/.tools"
export PATH="$tools/cargo/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "[fuzz] error: the nightly Rust toolchain is missing (cargo-fuzz needs it):" \
        "rustup toolchain install nightly --profile minimal" >&2
    exit 1
fi
if ! command -v cargo-fuzz >/dev/null; then
    echo "[fuzz] installing cargo-fuzz into .tools/cargo"
    cargo install cargo-fuzz --locked --root "$tools/cargo"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decode_json decode_protobuf; do
    mkdir -p "fuzz/corpus/$target" "$scratch/$target"
    echo "[fuzz] $target for ${seconds} s"
    cargo +nightly fuzz run "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done
echo "[fuzz] no crash"
