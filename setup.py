"""Builds the fused-kernel extension pydiffusion.diffusion._C from csrc/ with ninja.

Needs torch at build time: `pip install --no-build-isolation .` (without torch it stops with that
advice). The CPU kernels always; the CUDA kernels too when torch has CUDA and nvcc is found
(PYDIFFUSION_CPU_ONLY=1 skips them). If the CUDA part fails to build, the CPU part is built alone;
if that fails too, the package still installs, with one warning, and pydiffusion.diffusion.ops falls back to
the pure-PyTorch reference (PYDIFFUSION_FORCE_CUDA=1 attempts the CUDA build whatever torch says,
which is how the fallback is tested on a machine without CUDA).
"""
import os
import shutil
import sys

from setuptools import setup

REQUIREMENTS = [
    "numpy",
    "mnist1d>=0.0.2",
    "pyyaml",
    "tqdm",
    "wandb>=0.17",
    "matplotlib",
    "scipy",
    "scikit-learn",  # its bundled 8 x 8 digits (dataset: digits)
    "safetensors",  # exports (pydiffusion export)
]
ext_modules, cmdclass = [], {}
torch_requirement = "torch>=2.4"  # a source distribution: the wheel built from it pins its own torch
try:
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    # pip's default build isolation hides the installed torch; a wheel built here would silently lack
    # the kernels. A source distribution needs no compiler, so only it goes on without torch.
    if "sdist" not in sys.argv:
        sys.exit("pydiffusion: torch is not importable while building, so the fused kernels (pydiffusion.diffusion._C) "
                 "cannot be compiled. Install torch first, then build without isolation:\n"
                 "    pip install torch ninja 'setuptools>=77' wheel\n"
                 "    pip install --no-build-isolation .")
else:
    # the kernels link against this torch's C++ ABI, so the wheel requires exactly it (pydiffusion.diffusion.ops
    # falls back to the reference ops, with one warning, if another torch is installed anyway)
    torch_requirement = f"torch=={torch.__version__.split('+')[0]}"
    here = os.path.dirname(os.path.abspath(__file__))
    include = [os.path.join(here, "csrc")]
    cpu_sources = [os.path.join("csrc", "ops.cpp"), os.path.join("csrc", "block_ops.cpp")]
    # -fopenmp: at::parallel_for is an inline OpenMP region, serial without it (the extension links
    #   libgomp.so.1, which resolves to the copy torch has already loaded: one thread pool, and
    #   torch.set_num_threads applies).
    # -ffp-contract=off: no FMA contraction, so the kernels round like the eager PyTorch reference,
    #   which matters where a formula is ill-conditioned (x0_hat from eps divides by a_t ~ 0.004 at t = T).
    # -fno-math-errno: sqrt vectorises (it never sets errno on the clamped, non-negative arguments).
    # -fno-trapping-math: floating-point operations raise no traps (the default environment), so the compiler may
    #   turn selects on computed values into vector blends: block_math.h's exp and the GroupNorm-FiLM-SiLU loops
    #   vectorise only with it. Results are the same (no reassociation, no contraction).
    # -g0: no debug information (Python's own CFLAGS ask for -g; it makes the library 7 MB).
    cxx = ["-O3", "-g0", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]
    link = ["-fopenmp"]

    def cpu_extension():
        return CppExtension("pydiffusion.diffusion._C", cpu_sources, include_dirs=include, extra_compile_args={"cxx": cxx},
                            extra_link_args=link)

    force_cuda = os.environ.get("PYDIFFUSION_FORCE_CUDA") == "1"
    with_cuda = (force_cuda or (torch.version.cuda is not None and CUDA_HOME is not None)) \
        and os.environ.get("PYDIFFUSION_CPU_ONLY") != "1"
    def warn(what, err):
        print(f"pydiffusion: WARNING: {what} ({type(err).__name__}: {str(err).strip()[:300]})", file=sys.stderr)

    ext = None
    if with_cuda:
        try:
            cuda_sources = [os.path.join("csrc", "cuda", name) for name in ("ops.cu", "block_ops.cu")]
            ext = CUDAExtension("pydiffusion.diffusion._C", cpu_sources + cuda_sources,
                                include_dirs=include, extra_link_args=link,
                                extra_compile_args={"cxx": cxx, "nvcc": ["-O3", "--fmad=false"]})
        except Exception as e:  # no CUDA toolkit where torch looks for one
            warn("the CUDA kernels cannot be configured; building the CPU kernels alone", e)
            with_cuda = False
    if ext is None:
        ext = cpu_extension()

    class OptionalBuild(BuildExtension.with_options(use_ninja=True)):
        """CUDA failing falls back to CPU only; CPU failing is one warning, and the PyTorch reference ops."""

        def build_extensions(self):
            try:
                super().build_extensions()
                return
            except Exception as e:
                err = e
            if with_cuda:
                warn("the CUDA kernels did not build (compiler output above); building the CPU kernels alone", err)
                self.extensions = [cpu_extension()]
                try:
                    super().build_extensions()
                    return
                except Exception as e:
                    err = e
            self.extensions = []  # nothing for setuptools to copy or record
            warn("the fused-kernel extension pydiffusion.diffusion._C did not build (compiler output above); "
                 "pydiffusion.diffusion.ops will use the PyTorch reference", err)

        def copy_extensions_to_source(self):
            """In-place (editable) builds: copy the library beside the old one and rename it over it.
            setuptools rewrites the old file in place, which can crash a running process that has it
            mapped (tests or training runs during a rebuild)."""

            def atomic_copy(src, dst, *args, **kwargs):
                tmp = f"{dst}.{os.getpid()}.tmp"
                shutil.copyfile(src, tmp)
                shutil.copymode(src, tmp)
                os.replace(tmp, dst)
                return dst, True

            self.copy_file = atomic_copy
            try:
                super().copy_extensions_to_source()
            finally:
                del self.copy_file

    ext_modules, cmdclass = [ext], {"build_ext": OptionalBuild}

setup(install_requires=[torch_requirement, *REQUIREMENTS], ext_modules=ext_modules, cmdclass=cmdclass)
