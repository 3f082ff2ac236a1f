#!/usr/bin/env bash
# Compile csrc/cuda/*.cu with nvcc for sm_80 and sm_90 (object files only, no GPU and no CUDA
# build of torch needed): a CUDA compile error fails CI even on a machine without a GPU.
#   csrc/check_cuda_compile.sh [OUT_DIR]      (PYTHON: the interpreter with torch; NVCC: the compiler)
# Any torch wheel will do, the CPU one included: its include folders hold the ATen and c10/cuda
# headers; the CUDA headers come from the toolkit beside nvcc. Exit 77: nvcc or torch is missing
# (any other non-zero status is a compile error).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$(mktemp -d)}"
python="${PYTHON:-python3}"
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
if [ ! -x "$nvcc" ]; then
    echo "check_cuda_compile: nvcc not found (set NVCC or put it on PATH)" >&2
    exit 77
fi
if ! "$python" -c "import torch" 2>/dev/null; then
    echo "check_cuda_compile: $python cannot import torch (set PYTHON)" >&2
    exit 77
fi
cuda_home="$(dirname "$(dirname "$nvcc")")"
includes=()
for d in $("$python" -c "import torch.utils.cpp_extension as c; print(' '.join(c.include_paths()))"); do
    includes+=("-I$d")
done
# The CPU wheel ships the c10/cuda headers but not the one header its CMake build generates.
mkdir -p "$out/include/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$out/include/c10/cuda/impl/cuda_cmake_macros.h"
abi=$("$python" -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
for source in "$here"/cuda/*.cu; do
for arch in 80 90; do
    name="$(basename "$source" .cu)"
    "$nvcc" -c "$source" -o "$out/${name}_sm_$arch.o" -std=c++20 -O3 --fmad=false \
        -gencode "arch=compute_$arch,code=sm_$arch" --expt-relaxed-constexpr \
        -Xcompiler -fPIC -D_GLIBCXX_USE_CXX11_ABI="$abi" -DTORCH_EXTENSION_NAME=_C \
        -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__ \
        -D__CUDA_NO_HALF2_OPERATORS__ "-I$here" "${includes[@]}" "-I$out/include" "-I$cuda_home/include"
    echo "compiled $out/${name}_sm_$arch.o"
done
done
