"""`pydiffusion plot`: a run's loss curves, the total and every component per epoch, and once it has finished
training its forward test MSE at each timestep (metrics.json's test_mse_forward_t)."""
from pathlib import Path

from pydiffusion.cli.options import check_out_file
from pydiffusion.files import UnreadableFileError, load_json
from pydiffusion.reporting.figures import loss_curves

HELP = "plot a run's loss curves: the total and every component per epoch, log scale"


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    parser.add_argument("--out", required=True, help="a .png file")


def run(args):
    out = check_out_file(args.out, (".png",))
    file = Path(args.run) / "history.json"
    fix = f"train first with `pydiffusion train --out {args.run}`"
    history = load_json(file, "history", fix)
    if not isinstance(history, list) or not history:
        raise UnreadableFileError(f"history {file} holds no epochs; {fix}")
    metrics_file = Path(args.run) / "metrics.json"  # none while the run still trains
    metrics = load_json(metrics_file, "metrics", fix) if metrics_file.exists() else {}
    mse_t = metrics.get("test_mse_forward_t") if isinstance(metrics, dict) else None
    loss_curves(history, out, f"{args.run}: training loss per epoch", mse_t)
    print(f"{len(history)} epochs of {file}{' and its test MSE per timestep' if mse_t else ''}; wrote {out}")
