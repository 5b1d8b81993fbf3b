#!/usr/bin/env bash
# Everything issue 4 and issue 8 (table 3) need from one GPU machine, in one
# call: run from the repository root there, with `make gpu-bundle`'s
# .devrun/ carried along (stripped hcpipe, hcpipe-torch and the worker's test
# binary, built on a CPU machine). The GPU machine brings its own torch
# 2.11.0 (+cu130): LD_LIBRARY_PATH points the worker at it.
#
#   1. the worker's GPU tests (graph replay = eager steps; the CNN learns on
#      CUDA and a CPU evaluation of its weights agrees);
#   2. bench/lab_gpu.py: pipelines/oasis.yaml on synthetic data of the real
#      size (377 subjects, 30 epochs), hcpipe with CUDA graphs, hcpipe with
#      eager steps, and the lab's own code (bench/lab.py) on the same data.
#
# $OUT gets at most 8 files (the device tool's limit): machine.txt,
# gpu-tests.log, bench.log, results.json, table.md and raw.tgz (logs, run
# records, nvidia-smi samples); the end of stdout is the table. Then, here:
# `python3 bench/lab_gpu.py --write-benchmarks results.json`.
# Usage: [SKIP_TESTS=1] bench/gpu_run.sh [extra lab_gpu.py arguments]
set -uo pipefail
OUT=${OUT:-/tmp/hcpipe-gpu-out}
BIN=${BIN:-.devrun}
mkdir -p "$OUT"
started=$(date +%s)

TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 1
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

{
    echo "== machine"
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv,noheader
    nproc
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    "$BIN/hcpipe-torch" --version
} 2>&1 | tee "$OUT/machine.txt"

# The test binary runs the worker from the path it was built at.
built_at=$(grep -a -o -m1 '/[[:alnum:]_./-]*/target/release/hcpipe-torch' "$BIN/worker-tests" | head -1)
if [ -n "$built_at" ] && [ ! -e "$built_at" ]; then
    mkdir -p "$(dirname "$built_at")" && ln -sf "$PWD/$BIN/hcpipe-torch" "$built_at"
fi
echo "== GPU tests"
[ "${SKIP_TESTS:-0}" = 1 ] && echo "skipped (SKIP_TESTS=1)" || timeout 150 "$BIN/worker-tests" --ignored gpu:: --test-threads 1 2>&1 | tee "$OUT/gpu-tests.log" | tail -8
echo "GPU tests exit status: ${PIPESTATUS[0]}"

echo "== benchmark ($(($(date +%s) - started)) s so far)"
# lab_gpu.py stops its steps within --budget; the device tool's cap is 600 s.
budget=$((570 - ($(date +%s) - started)))
RAW=/tmp/hcpipe-gpu-raw
rm -rf "$RAW"
python3 bench/lab_gpu.py --bin "$BIN" --work /tmp/hcpipe-gpu-work --out "$RAW" \
    --budget "$budget" --parity "$@" > "$OUT/bench.log" 2>&1
cp "$RAW/results.json" "$RAW/table.md" "$OUT/" 2>/dev/null
tar czf "$OUT/raw.tgz" -C "$RAW" . 2>/dev/null
tail -n 25 "$OUT/bench.log"
echo "== table"
cat "$OUT/table.md"
echo "== done in $(($(date +%s) - started)) s"
