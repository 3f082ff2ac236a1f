"""pydiffusion: does semi-implicit training help small diffusion models? A library of small diffusion models on
MNIST-1D and small images, with fused C++/CUDA kernels, and the Snakemake workflow that answers the question.

The package's wings, from the bottom up (docs/architecture.md): config, files and progress at the base; data (the
data sets, their labels, the prime-inverse patterns); diffusion (noise paths, losses, the fused ops, the denoiser,
the samplers); nets (the denoising networks and the classifiers); checkpoints (a run directory's saved state);
evaluation (test metrics, sample quality); training (the loop, the trainers, W&B tracking); reporting and ablations
(the grid's and the ablation study's reports); cli (the commands) on top.

The names below are the Python entry points (docs/quickstart.md), the functions the commands call too:

    import pydiffusion
    run = pydiffusion.train({"epochs": 5}, "runs/first")   # or pydiffusion.load_run(a run directory or an export)
    x, y = run.sample(16, label=3)
    pydiffusion.export_run("runs/first", "exports/first")  # model.safetensors, config.json, a model card

They load on first use, so that `import pydiffusion.config` (which the workflow does while it parses its config)
does not import torch.
"""
import importlib

from pydiffusion.config import VERSION as __version__

# public name -> the module that defines it
_PUBLIC = {
    "load_config": "pydiffusion.config",
    "validate": "pydiffusion.config",
    "ConfigError": "pydiffusion.config",
    "load_dataset": "pydiffusion.data.datasets",
    "NoisePath": "pydiffusion.diffusion.paths",
    "Denoiser": "pydiffusion.diffusion.denoiser",
    "SAMPLERS": "pydiffusion.diffusion.samplers",
    "draw_class_samples": "pydiffusion.diffusion.samplers",
    "build_model": "pydiffusion.nets.backbones",
    "Run": "pydiffusion.runs",
    "load_run": "pydiffusion.runs",
    "load_exported": "pydiffusion.runs",
    "train": "pydiffusion.runs",
    "export_run": "pydiffusion.reporting.export",
    "evaluate_run": "pydiffusion.training.loop",
    "evaluate_quality": "pydiffusion.evaluation.quality",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'pydiffusion' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(__all__)
