#!/usr/bin/env bash
# Ward's detectors against Microsoft Presidio's pattern recognizers, same
# texts, same run: prints MB/s for each text set and the ratio.
#
#   bench/scan-vs-presidio.sh            # ~2 minutes
#   PRESIDIO_SECONDS=5 bench/scan-vs-presidio.sh
#
# Ward: `cargo bench --bench scan` (criterion, one thread), which also
# writes the generated texts to a temporary directory. Presidio: its
# recognizers for the same identifiers, regexes and validators only, no
# spaCy model (bench/presidio_compare.py), in a virtualenv kept under
# ${XDG_CACHE_HOME:-~/.cache}/ward-bench and created on first use with
# `pip install presidio-analyzer`.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/ward-bench"
venv="$cache/presidio-venv"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if ! "$venv/bin/python" -c 'import presidio_analyzer' 2>/dev/null; then
    echo "creating $venv (pip install presidio-analyzer)" >&2
    mkdir -p "$cache"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q presidio-analyzer
fi

echo "== Ward (cargo bench --bench scan)"
WARD_SCAN_TEXTS_DIR="$work" cargo bench --bench scan 2>&1 | tee "$work/ward.log" | grep -E '^(phi_free|mixed):|time:|thrpt:' || true

echo "== Presidio pattern recognizers (same texts)"
"$venv/bin/python" bench/presidio_compare.py "$work" --seconds "${PRESIDIO_SECONDS:-20}" | tee "$work/presidio.jsonl"

echo "== Side by side (MB = 10^6 bytes; Ward: criterion median)"
python3 - "$target" "$work" <<'PY'
import json, sys
from pathlib import Path

target, work = Path(sys.argv[1]), Path(sys.argv[2])
presidio = {}
for line in (work / "presidio.jsonl").read_text().splitlines():
    row = json.loads(line)
    presidio[row["set"]] = row
print(f"{'text set':<10} {'bytes':>9} {'Ward MB/s':>10} {'Presidio MB/s':>14} {'ratio':>7}"
      f" {'Presidio w/o phone':>19} {'ratio':>7}")
for name in ("phi_free", "mixed"):
    size = (work / f"{name}.txt").stat().st_size
    estimates = json.loads((target / "criterion" / "scan" / name / "new" / "estimates.json").read_text())
    ns = estimates["median"]["point_estimate"]
    ward = size / ns * 1e3
    p = presidio[name]["mb_per_s"]
    # PhoneRecognizer (the phonenumbers library) is most of Presidio's
    # time; without it Presidio is its regular expressions alone.
    per = presidio[name]["seconds_per_run_by_recognizer"]
    regex_only = size / 1e6 / sum(v for k, v in per.items() if k != "PhoneRecognizer")
    print(f"{name:<10} {size:>9} {ward:>10.1f} {p:>14.3f} {ward / p:>6.0f}x"
          f" {regex_only:>19.2f} {ward / regex_only:>6.0f}x")
PY
