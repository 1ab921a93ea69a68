#!/usr/bin/env bash
# Regenerates the README's configuration reference from src/config.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=$(cargo run -q -- config-reference)
python3 - "$ref" <<'PY'
import sys, re
ref = sys.argv[1]
text = open("README.md").read()
start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
head, rest = text.split(start, 1)
_, tail = rest.split(end, 1)
open("README.md", "w").write(head + start + "\n" + ref.rstrip("\n") + "\n" + end + tail)
PY
