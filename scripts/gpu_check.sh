#!/usr/bin/env bash
# GPU check of the paper's setting (docs/training.md "GPU check"): one command, <= 8 minutes on one GPU,
# unattended; prints one JSON object on stdout (progress on stderr) and exits non-zero when a check fails.
#   scripts/gpu_check.sh                # full: Galaxy10-sized synthetic HDF5, ViT-B-16 random init, bf16 / fp16 / compile
#   scripts/gpu_check.sh --reduced      # the same code path on the CPU in seconds (run by make test)
# Extra arguments go to scripts/gpu_check.py (--out DIR keeps the synthetic file between runs).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="$(command -v python3)"; fi
fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
LIMIT="${GPU_CHECK_TIMEOUT:-480}"
OUTPUT="$(mktemp)"
trap 'rm -f "$OUTPUT"' EXIT
timeout "$LIMIT" "$PY" "$ROOT/scripts/gpu_check.py" "$@" | tee "$OUTPUT"
"$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); sys.exit(0 if r["ok"] else 1)' "$OUTPUT"
