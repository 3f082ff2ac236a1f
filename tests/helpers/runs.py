"""A run directory made up without training, for tests of what reads runs back."""
import torch
import yaml

from helpers.configs import TINY
from pydiffusion.config import validate
from pydiffusion.files import save_json, save_torch
from pydiffusion.nets.backbones import build_model
from pydiffusion.reporting.grid_stats import METRICS


def made_up_run(root, training, seed, offset=0.0, model=False, sampler="ddim"):
    """A run directory as training leaves it, with every metric of METRICS at 1 + offset + seed / 100 (so the
    seeds differ and semi-implicit minus implicit is `offset` in every seed); model.pt holds untrained weights."""
    run = root / f"mse-gaussian-{training}" / f"seed{seed}"
    cfg = validate({**TINY, "training": training, "seed": seed, "epochs": 2, "sampler": sampler})
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    values = {k: 1.0 + offset + seed / 100 for k in METRICS}
    save_json({**{k: v for k, v in values.items() if not k.startswith(("fd_", "sample_", "coverage", "nn_"))},
               "seed": seed, "epochs": 2, "n_params": 1000,
               "test_mse_forward_t": [(1.0 + offset + seed / 100) * t / 20 for t in range(1, 21)]}, run / "metrics.json")
    save_json({k: v for k, v in values.items() if k.startswith(("fd_", "sample_", "coverage", "nn_"))},
              run / "quality.json")
    save_json([{"epoch": e, "loss": 1.0 / e, "forward": 0.5 / e, "lr": 1e-3, "time_s": 1.0} for e in (1, 2)],
              run / "history.json")
    save_torch({"x": torch.randn(20, 40, generator=torch.Generator().manual_seed(seed)), "y": torch.arange(20) % 10},
               run / "samples.pt")
    if model:
        torch.manual_seed(seed)
        save_torch({"config": cfg, "ema": build_model(cfg).state_dict(), "history": [], "epoch": 2}, run / "model.pt")
    return run
