#!/usr/bin/env bash
# Fuzzes each decoder (JSON, Protobuf) for SECONDS seconds (default 30) with cargo-fuzz
# (libFuzzer). The test command runs it after the test suite.
#
#   ./scripts/fuzz.sh          # 30 s per target
#   ./scripts/fuzz.sh 600      # longer, e.g. before a release
#
# It runs on the stable toolchain without a sanitizer (`-s none`): the decoders are safe Rust,
# and the targets look for panics and broken invariants. With a nightly toolchain,
# SAKURA_FUZZ_TOOLCHAIN=nightly SAKURA_FUZZ_SANITIZER=address adds AddressSanitizer.
# New interesting inputs go to a scratch corpus (the seeds in fuzz/corpus/ stay as they are);
# a crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
toolchain="${SAKURA_FUZZ_TOOLCHAIN:-}"
sanitizer="${SAKURA_FUZZ_SANITIZER:-none}"
tools="$PWD/.tools"
export PATH="$tools/cargo/bin:$PATH"

if ! command -v cargo-fuzz >/dev/null; then
    echo "[fuzz] installing cargo-fuzz into .tools/cargo"
    cargo install cargo-fuzz --locked --root "$tools/cargo"
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in decode_json decode_protobuf; do
    mkdir -p "fuzz/corpus/$target" "$scratch/$target"
    echo "[fuzz] $target for ${seconds} s (sanitizer: $sanitizer)"
    cargo ${toolchain:++$toolchain} fuzz run -s "$sanitizer" "$target" \
        "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1
done
echo "[fuzz] no crash"
