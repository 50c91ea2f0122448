#!/usr/bin/env bash
# What needs the GPU machine, in one go (its time is short). Stages, in the order given
# (default: check gputests suite bench):
#   check     the CUDA parity check and speed (bench_cuda.py)
#   gputests  the CUDA tests (they run only where a device is) and the numerically delicate ones
#   suite     the whole test suite there (Python 3.12, that machine's torch and numpy)
#   bench     bench_extract.py on that machine's cores, CPU and CUDA workers (one round)
#   probe     where a run's time goes there: imports, --jobs, CUDA workers, long files
# Results go to $OUT (default /tmp/gpu-out).
#
# That machine has torch but no audio libraries and no network: fetch the wheels here first,
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl librosa soundfile soxr audioread pooch platformdirs decorator cffi pycparser kaldi_native_fbank
# and carry .whl along. adares itself runs from this tree (cli/ linked in as adares/cli, as the
# package installs it).
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
if [ ! -e adares/cli ]; then ln -s ../cli adares/cli; trap 'rm -f adares/cli' EXIT; fi  # gone afterwards
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; echo "cpus: $(nproc)";
  python3 -c 'import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, numpy.__version__)'; } | tee "$OUT/machine.txt"

check() {
    echo "== CUDA parity and speed"
    timeout 100 python3 benchmarks/bench_cuda.py --json "$OUT/cuda.json" > "$OUT/cuda.log" 2>&1
    echo "exit $?"; tail -n 80 "$OUT/cuda.log"
}

gputests() {
    echo "== CUDA tests and the numerically delicate ones"
    timeout 60 python3 -m pytest -q -p no:cacheprovider -k "cuda or end_to_end or precision" tests 2>&1 | tail -n 15
}

suite() {
    echo "== whole test suite"
    timeout 120 python3 -m pytest -q -p no:cacheprovider tests > "$OUT/tests.log" 2>&1
    echo "exit $?"; tail -n 15 "$OUT/tests.log"
}

bench() {
    echo "== extraction: naive loop vs adares, this machine's cores, CPU and GPU workers"
    timeout 280 python3 benchmarks/bench_extract.py --models none,default --devices cpu,cuda --rounds 1 --repeats 2 \
        --json "$OUT/extract-gpu-machine.json" > "$OUT/extract.log" 2>&1
    echo "exit $?"; tail -n 20 "$OUT/extract.log"
}

probe() {
    echo "== where the time goes (one run each after a warm-up; wall, user and system seconds)"
    local data=/tmp/probe out=/tmp/probe-out
    rm -rf "$data" "$out"
    python3 -c "import sys; sys.path.insert(0, 'benchmarks'); import bench_extract as b; from pathlib import Path
b.make_corpora(Path('$data'), clips=3000, long_files=2, long_seconds=600.0)
open('/tmp/naive.py', 'w').write(b.NAIVE_LOOP)"
    TIMEFORMAT="%R s wall, %U user, %S sys"
    t() { local name=$1; shift; sync; echo -n "$name: "; { time "$@" > /dev/null 2> /tmp/err || tail -3 /tmp/err; } 2>&1; }
    ex() { python3 -m adares.cli extract --hop 5ms --n-mels 128 -q "$@"; }
    t "import torch (1st)" python3 -c "import torch"
    t "import torch (2nd)" python3 -c "import torch"
    t "import torch + adares.pipeline" python3 -c "import torch, adares.pipeline"
    t "import librosa + numpy" python3 -c "import librosa, numpy"
    t "warm-up: none -j 16" ex --model none $data/clips $out/w
    t "naive loop, 3000 clips" python3 /tmp/naive.py $data/clips $out/naive
    for j in 16 8 4 2; do t "none -j $j, 3000 clips" ex --model none --jobs $j $data/clips $out/n$j; done
    t "no-op rerun of none -j 16" ex --model none --jobs 16 $data/clips $out/n16
    t "default -j 16" ex --model default --jobs 16 $data/clips $out/d16
    for j in 16 4; do t "default --device cuda -j $j" ex --model default --device cuda --jobs $j $data/clips $out/c$j; done
    t "naive loop, 2 x 10 min" python3 /tmp/naive.py $data/long $out/naive-long
    t "none, 2 x 10 min" ex --model none $data/long $out/nl
    t "default, 2 x 10 min" ex --model default $data/long $out/dl
    t "default --device cuda, 2 x 10 min" ex --model default --device cuda $data/long $out/cl
}

for stage in ${@:-check gputests suite bench}; do "$stage"; done
