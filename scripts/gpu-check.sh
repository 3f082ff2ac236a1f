#!/usr/bin/env bash
# Everything a GPU machine should check, in one call (sized for 8 minutes on one H100-class GPU):
#   1. build the CUDA extension in place (setup.py build_ext, CUDA_HOME default /usr/local/cuda);
#   2. the CUDA tests: tests/system/test_kernels_cuda.py, and the kernel tests that also run on the GPU;
#   3. bench/kernels.py on the GPU: every fused op against eager and torch.compile at [4096, 40] and 16M elements,
#      with the device-to-device copy bandwidth measured in the same run;
#   4. bench/gpu.py: the best configuration for 60 epochs in float32 and under bf16 autocast, and one whole default
#      grid job eagerly and with torch.compile(mode="reduce-overhead"); it writes bench/results/gpu-<device>.json.
# Without a GPU it stops in one line, exit status 3, before building anything.
#   scripts/gpu-check.sh            (PYTHON: an interpreter with a CUDA build of torch; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if ! "$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu-check: no CUDA GPU here ($python sees none, or has no torch); nothing was built or measured" >&2
    exit 3
fi
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}" PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
work="$(mktemp -d)"
echo "gpu-check 1/4: building the CUDA extension"
"$python" setup.py -q build_ext --inplace > "$work/build.log" 2>&1 || { tail -40 "$work/build.log"; exit 1; }
"$python" -c "import sys; from pydiffusion.diffusion import ops; sys.exit(0 if ops.backend('cuda') == 'cuda' else 1)" \
    || { echo "gpu-check: the extension built without its CUDA kernels (log: $work/build.log)" >&2; exit 1; }
echo "gpu-check 2/4: CUDA tests"
"$python" -m pytest -q -p no:cacheprovider tests/system/test_kernels_cuda.py tests/unit/test_kernels.py \
    tests/unit/test_block_kernel.py
echo "gpu-check 3/4: fused ops against eager and torch.compile"
"$python" bench/kernels.py --devices cuda --threads 1 --shapes 4096x40 16M --repeats 7 --out "$work/kernels.json"
echo "gpu-check 4/4: training and a grid job"
"$python" bench/gpu.py --kernels "$work/kernels.json"
