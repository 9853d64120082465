#!/usr/bin/env bash
# One device session's checks, as one prepared script (the device lease is short): GPU smoke
# test and GPU figures. Run from the repository root on the GPU machine, e.g.
#   OUT=/tmp/out bash benchmarks/gpu_check.sh 570
#   OUT=/tmp/out bash benchmarks/gpu_check.sh 570 "batched sweep flow realnet smoke"
# $1 = the seconds it may take in all; $2 = the sections to run, in this order: grid (the grid
# rows no CPU run has finished, with --dense: how far each gets), batched, sweep, flow (the
# size targets and large rows measured in session 27), realnet, smoke (GPU smoke test, with
# whatever time is left). Default "grid smoke". Writes at most 8 files to $OUT (log.txt and
# the benchmarks' JSON). Packages the machine lacks are installed from ./.devwheels if present.
set -u
budget=${1:-570}
sections=" ${2:-grid smoke} "
want() { [[ "$sections" == *" $1 "* ]]; }
start=$(date +%s)
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false MPLBACKEND=Agg
log=$OUT/log.txt
left() { echo $(( budget - ($(date +%s) - start) )); }
step() { echo; echo "=== $1 (t=$(( $(date +%s) - start )) s, $(left) s left)"; }
{
step env
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import sys, jax; print(sys.version.split()[0], 'jax', jax.__version__, jax.devices())"
nproc
if ls .devwheels/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps .devwheels/*.whl 2>&1 | tail -2
fi

if want grid; then
step "full GF: the grid rows no CPU run has finished (38, 25, 59), how far each gets"
timeout 330 python3 benchmarks/bench_flow_device.py --dense --cases grid-38,grid-25,grid-59 \
  --budget 320 --out "$OUT/flow_device_grid.json"
fi

if want batched; then
step "batched API: solve_hadamard_many vs the sweep engine, 4096 runs"
timeout 80 python3 benchmarks/bench_batched_api.py --repeats 3 \
  --out "$OUT/bench_batched_api_gpu.json"
fi

if want sweep; then
step "default sweep, cold, end to end: python -m ufmflow.sweep depth=2..8"
t0=$(date +%s.%N)
timeout 60 python3 -m ufmflow.sweep depth=2..8 cache=none out=/tmp/sweep_gpu
echo "rc=$? wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
ls /tmp/sweep_gpu 2>/dev/null && cat /tmp/sweep_gpu/summary.txt 2>/dev/null | head -40
fi

if want flow; then
step "full GF on the device: size targets and the largest grid rows"
timeout 175 python3 benchmarks/bench_flow_device.py --budget 165 --out "$OUT/flow_device.json" \
  --cases grid-42,target-2a,grid-23,grid-20,target-2b
fi

if want realnet; then
step "realnet: does the deepest head (8) fit at lr 0.05? ResNet-20, MNIST-5000, 400 epochs"
t0=$(date +%s.%N)
timeout 100 python3 -m ufmflow.realnet data=mnist depths=8 widths=100 fixed_depth=8 \
  fixed_width=100 seeds=1 epochs=400 checkpoints=4 progress=0 out=/tmp/realnet_gpu
echo "rc=$? wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
cat /tmp/realnet_gpu/summary.txt 2>/dev/null | head -30
cp /tmp/realnet_gpu/numbers.json "$OUT/realnet_numbers.json" 2>/dev/null
fi

if want smoke; then
step "GPU smoke test: tests/core and tests/solvers (not slow)"
timeout $(( $(left) - 8 )) python3 -m pytest -q -n 8 -p no:cacheprovider \
  --durations=10 tests/core tests/solvers 2>&1 | tail -40
fi
step done
} >"$log" 2>&1
