#!/bin/sh
# Installs pydiffusion, with its compiled extension pydiffusion.diffusion._C, into a container image.
# Called from %post of containers/cpu.def and containers/gpu.def, and by containers/build-sif.sh
# inside a chroot; it can also be run by hand on any Debian/Ubuntu root file system.
#
#   PYDIFFUSION_SRC      the project's source tree              (/opt/pydiffusion/src)
#   PYDIFFUSION_VENV     the virtual environment to create      (/opt/pydiffusion/venv)
#   PYDIFFUSION_PYTHON   the interpreter that creates it        (python3)
#   PYDIFFUSION_TORCH    a pip requirement for torch, or "system" to use the torch already in the
#                        image (the PyTorch CUDA base image)   (torch==2.13.0)
#   PYDIFFUSION_TORCH_INDEX  an extra pip index for torch, e.g. PyTorch's CPU wheel index (none)
#   PYDIFFUSION_EXTRAS   the project's extras to install        (test: pytest for the %test section)
#   PYDIFFUSION_PURGE_BUILD_DEPS=1  remove the compiler and Python headers afterwards (0)
#   TORCH_CUDA_ARCH_LIST the CUDA architectures to build for    (7.0;7.5;8.0;8.6;8.9;9.0)
#   MAX_JOBS             parallel compile jobs                  (2)
set -eu

SRC=${PYDIFFUSION_SRC:-/opt/pydiffusion/src}
VENV=${PYDIFFUSION_VENV:-/opt/pydiffusion/venv}
PYTHON=${PYDIFFUSION_PYTHON:-python3}
TORCH=${PYDIFFUSION_TORCH:-torch==2.13.0}
TORCH_INDEX=${PYDIFFUSION_TORCH_INDEX:-}
EXTRAS=${PYDIFFUSION_EXTRAS:-test}
PURGE=${PYDIFFUSION_PURGE_BUILD_DEPS:-0}
export MAX_JOBS=${MAX_JOBS:-2}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# no pip cache in the image (a build may hand one in through PIP_CACHE_DIR, outside the image)
if [ -z "${PIP_CACHE_DIR:-}" ]; then export PIP_NO_CACHE_DIR=1; fi

say() { echo "install.sh: $*"; }

test -f "$SRC/pyproject.toml" || { say "no project at $SRC (copy the source there first)" >&2; exit 1; }

# 1. System packages: an interpreter with venv, its headers and a C++ compiler for the extension;
#    apt-get installs only what is missing (the PyTorch images bring their own conda Python).
missing_packages() {
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo python3 python3-venv python3-dev
    else
        "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1 || echo python3-venv
        "$PYTHON" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
            >/dev/null 2>&1 || echo python3-dev
    fi
    command -v c++ >/dev/null 2>&1 || echo g++
}
missing=$(missing_packages | tr '\n' ' ')
if [ -n "${missing% }" ]; then
    command -v apt-get >/dev/null 2>&1 || { say "missing: $missing(and no apt-get to install them)" >&2; exit 1; }
    say "installing with apt-get: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing ca-certificates
    missing=$(missing_packages | tr '\n' ' ')
    if [ -n "${missing% }" ]; then say "still missing: $missing" >&2; exit 1; fi
fi

# 2. The virtual environment; the GPU image reuses its base image's CUDA torch through the
#    system site-packages instead of downloading another one.
if [ "$TORCH" = system ]; then
    "$PYTHON" -c 'import torch' || { say "PYDIFFUSION_TORCH=system but $PYTHON has no torch" >&2; exit 1; }
    "$PYTHON" -m venv --system-site-packages "$VENV"
else
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"

# 3. torch, ninja and the build backend, then the project itself without build isolation, so
#    that setup.py compiles pydiffusion.diffusion._C against exactly this torch.
if [ "$TORCH" = system ]; then
    $PIP install -q ninja "setuptools>=77" wheel
else
    set -- ninja "setuptools>=77" wheel "$TORCH"
    if [ -n "$TORCH_INDEX" ]; then set -- --extra-index-url "$TORCH_INDEX" "$@"; fi
    $PIP install -q "$@"
fi
if "$VENV/bin/python" -c 'import sys, torch; sys.exit(torch.version.cuda is None)'; then
    export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-7.0;7.5;8.0;8.6;8.9;9.0}"
    if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
    say "CUDA torch: building the kernels for TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
fi
rm -rf "$SRC/build" "$SRC"/*.egg-info "$SRC"/pydiffusion/diffusion/_C*.so
target="$SRC"
if [ -n "$EXTRAS" ]; then target="$SRC[$EXTRAS]"; fi
$PIP install -q --no-build-isolation "$target"
rm -rf "$SRC/build" "$SRC"/*.egg-info

# 4. The extension must have built (setup.py only warns when it does not), and on a CUDA torch
#    it must carry the CUDA kernels.
cd /
"$VENV/bin/python" - <<'EOF'
import torch
import pydiffusion
from pydiffusion.diffusion import _C, ops  # noqa: F401
has_cuda = torch.ops.pydiffusion.q_sample.default.has_kernel_for_dispatch_key("CUDA")
print(f"install.sh: pydiffusion {pydiffusion.__file__}, torch {torch.__version__}, ops backend {ops.backend('cpu')}"
      f", CUDA kernels {'yes' if has_cuda else 'no'}")
assert ops.backend("cpu") == "cpp", "the compiled extension did not load"
if torch.version.cuda is not None:
    assert has_cuda, "torch has CUDA but pydiffusion.diffusion._C was built without the CUDA kernels"
EOF
mkdir -p /usr/local/bin
ln -sf "$VENV/bin/pydiffusion" /usr/local/bin/pydiffusion

# 5. The version label (Apptainer collects labels written to $APPTAINER_LABELS in %post).
labels=${APPTAINER_LABELS:-${SINGULARITY_LABELS:-}}
if [ -n "$labels" ]; then
    version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("pydiffusion-mnist1d"))')
    echo "org.opencontainers.image.version $version" >> "$labels"
fi

# 6. Smaller image: no package caches, and (when asked) no compiler or headers: debootstrap marks
#    every package manual, so mark the build-only ones automatic before autoremove.
if command -v apt-get >/dev/null 2>&1; then
    if [ "$PURGE" = 1 ]; then
        say "removing the compiler and the headers"
        build_only=$(dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' 'g++*' 'gcc*' 'cpp*' 'binutils*' 'libbinutils' 'libctf*' \
            'libgprofng*' 'libcc1-*' 'libisl*' 'libmpc*' 'libmpfr*' 'libjansson*' '*-dev' 'rpcsvc-proto' \
            2>/dev/null | awk '$1 == "ii" {print $2}' | sort -u)
        # shellcheck disable=SC2086
        apt-mark auto $build_only >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get autoremove --purge -y -qq >/dev/null
    fi
    apt-get clean
    rm -rf /var/lib/apt/lists/*
fi
say "done"
