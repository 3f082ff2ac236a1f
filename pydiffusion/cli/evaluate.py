"""`pydiffusion evaluate`: a run's test metrics recomputed from its EMA weights."""
from pathlib import Path

from pydiffusion.checkpoints import load_denoiser, read_trained
from pydiffusion.cli.options import check_out_file
from pydiffusion.data.datasets import load_dataset
from pydiffusion.data.splits import evaluation_data
from pydiffusion.files import save_json
from pydiffusion.nets.backbones import count_parameters
from pydiffusion.training.loop import evaluate_run

HELP = "recompute a run's test metrics with its EMA weights"


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    parser.add_argument("--out", help="metrics file (default: RUN/metrics.json)")


def run(args):
    out = check_out_file(args.out or Path(args.run) / "metrics.json", (".json",))
    denoiser, cfg = load_denoiser(args.run)
    _, _, x_test, y_test = evaluation_data(load_dataset(cfg["dataset"], cfg["data_dir"], cfg["data_cache"]),
                                           cfg["validation_fraction"], cfg["eval_split"])
    history = read_trained(args.run)["history"]
    metrics = evaluate_run(denoiser, cfg, history, x_test, y_test, count_parameters(denoiser.model))
    save_json(metrics, out)
    print(f"test_mse={metrics['test_mse']:.4f} test_kl={metrics['test_kl']:.4f}; wrote {out}")
