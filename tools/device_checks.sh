#!/usr/bin/env bash
# The checks only a GPU can make, as one script for a lent GPU machine (BENCHMARKS.md says where
# the figures go): the Triton fo_pool kernels' correctness on CUDA, their speed against the copy
# bandwidth and cuDNN's LSTM, and paper-scale training speed (tokens/s, step time, peak memory) of
# the four architectures side by side (Hybrid Transformer, Transformer, PAR, Attn-QRNN), then the
# launch-plan sweeps that tune the kernels (each cut off after SWEEP_SECONDS, default 150).
#
#   bash tools/device_checks.sh [OUT_DIR]      # logs and tables there (default: $OUT, else ./device-out)
#
# Needs torch with CUDA, triton, numpy, typer, tqdm, safetensors, pytest and hypothesis already
# installed; the repository itself is not installed: its stages are laid out as the `hybrid` package
# (as pyproject.toml maps them) in a temporary folder on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-device-out}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
PKG="$(mktemp -d)"
mkdir "$PKG/hybrid"
cp cli/*.py "$PKG/hybrid/"
for stage in train export runtime; do ln -s "$PWD/$stage" "$PKG/hybrid/$stage"; done
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() {  # step LOG CMD...: run, keep the output in $OUT_DIR/LOG, remember a failure
    local log=$1; shift
    echo "+ $*"
    "$@" 2>&1 | tee "$OUT_DIR/$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
step gpu.txt nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step versions.txt "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
step triton_tests.txt "$PY" -m pytest -q -p no:cacheprovider tests/test_fo_pool_triton.py
step bench_fo_pool_cuda.md timeout 240 "$PY" tools/bench_fo_pool.py --device cuda --markdown
step bench_train.md "$PY" tools/bench_train.py --device cuda --steps 40 --models hybrid,transformer,par,attn-qrnn \
    --json "$OUT_DIR/bench_train.json"
# Many rows: tile shapes unchunked. One row per channel block: chunk lengths as well.
step sweep_fo_pool.txt timeout "${SWEEP_SECONDS:-150}" "$PY" tools/bench_fo_pool.py --device cuda --sweep \
    --shapes "1024,32,1024;1024,8,4096"
step sweep_fo_pool_chunks.txt timeout "${SWEEP_SECONDS:-150}" "$PY" tools/bench_fo_pool.py --device cuda --sweep \
    --shapes "4096,1,4096;16384,1,1024" --plans "32,64,4;32,32,2;64,64,8" --chunks 256,512,1024
exit $status
