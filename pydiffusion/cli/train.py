"""`pydiffusion train`: one configuration trained into a run directory (resumable), and with --classifier the
workflow's post-training job in the same process: the run's sample quality (quality.json, as `pydiffusion quality`)
and its samples (samples.pt, as `pydiffusion sample`)."""
import shlex
from pathlib import Path

from pydiffusion.cli.quality import check_quality_options, load_classifiers, print_quality
from pydiffusion.cli.sample import track_samples, write_samples
from pydiffusion.config import check_value, load_config
from pydiffusion.data.datasets import check_files, data_shape
from pydiffusion.diffusion.samplers import draw_class_samples
from pydiffusion.evaluation.quality import evaluate_quality
from pydiffusion.files import save_json
from pydiffusion.runs import check_memory, sample_settings, train

HELP = "train one configuration (resumes from OUT/checkpoint.pt)"


def add_arguments(parser):
    parser.add_argument("--config", help="YAML file of config keys (every key, its default and its valid values: "
                                         "pydiffusion/config.py)")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (values are YAML)")
    parser.add_argument("--wait", action="store_true",
                        help="if another process trains into OUT, wait for it and resume instead of stopping")
    parser.add_argument("--restart-on-config-change", action="store_true",
                        help="a checkpoint in OUT of a different configuration is discarded instead of stopping "
                             "(the workflow's choice: a changed grid retrains)")
    parser.add_argument("--classifier", nargs="+", metavar="FILE",
                        help="after training, also write OUT/quality.json (as `pydiffusion quality`) and OUT/samples.pt "
                             "(as `pydiffusion sample`) with these reference classifiers")
    parser.add_argument("--quality-samples", type=int, default=1000,
                        help="with --classifier: samples per quality measurement")
    parser.add_argument("--quality-draws", type=int, default=1,
                        help="with --classifier: independent sample sets per measurement")
    parser.add_argument("--samples", type=int, help="with --classifier: samples written to OUT/samples.pt (default: the "
                                                    "config's n_samples)")


def evaluate_samples(denoiser, cfg, data, tracker, run_dir, classifiers, n_quality, n_samples, draws=1):
    """What `pydiffusion quality` and `pydiffusion sample` (with its defaults; n_samples None: the config's)
    write, into RUN/quality.json and RUN/samples.pt, in the training process: one process per grid job
    instead of three."""
    run_dir = Path(run_dir)
    first, *more = classifiers
    q = evaluate_quality(denoiser, cfg, first, data, n=n_quality, seed=0, more_classifiers=more, draws=draws)
    save_json(q, run_dir / "quality.json")
    tracker.summary(q)
    settings = sample_settings(cfg, denoiser.path.T)
    n = cfg["n_samples"] if n_samples is None else n_samples
    x, y, xs = draw_class_samples(denoiser, n, **settings, seed=0, trajectory=True)
    write_samples(x, y, {**settings, "seed": 0}, run_dir / "samples.pt")
    track_samples(tracker, x, y, xs, settings, denoiser.path.T)
    print_quality(q, f"{run_dir / 'quality.json'} and {run_dir / 'samples.pt'}")


def run(args):
    cfg = load_config(args.config, args.set)
    check_files(cfg["dataset"], cfg["data_dir"])  # missing data files stop the run before any work
    evaluate = None
    if args.classifier:
        check_quality_options(args.quality_samples, args.quality_draws, n_flag="--quality-samples",
                              draws_flag="--quality-draws")
        if args.samples is not None:
            check_value("--samples", "n_samples", args.samples)
        shape = data_shape(cfg["dataset"])
        check_memory(cfg, shape, args.quality_samples, 1)
        check_memory(cfg, shape, cfg["n_samples"] if args.samples is None else args.samples, cfg["sample_steps"] + 1)
        classifiers = load_classifiers(args.classifier, cfg["dataset"])  # a bad file stops the run before any training

        def evaluate(denoiser, cfg, data, tracker):
            evaluate_samples(denoiser, cfg, data, tracker, args.out, classifiers, args.quality_samples, args.samples,
                             args.quality_draws)

    metrics = train(cfg, args.out, wait=args.wait, restart_on_config_change=args.restart_on_config_change,
                    evaluate=evaluate, command=shlex.join(["pydiffusion", *args.argv])).metrics
    print(f"test_mse={metrics['test_mse']:.4f} (forward {metrics['test_mse_forward']:.4f}, inverse "
          f"{metrics['test_mse_inverse']:.4f}) test_kl={metrics['test_kl']:.4f} nats/dim "
          f"in {metrics['train_time_s']:.1f} s; wrote {Path(args.out) / 'metrics.json'}")
