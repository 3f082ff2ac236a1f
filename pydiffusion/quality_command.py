"""`pydiffusion classifier` and `pydiffusion quality`, and the sample quality `pydiffusion train --classifier`
writes after training: the reference classifiers (pydiffusion/classifier.py) and what they measure of a run's
samples (pydiffusion/quality.py). Every bad value is a ConfigError (one line, exit status 2) before any work.
"""
import time
from pathlib import Path

from .checks import check_out_file
from .classifier import CLASSIFIERS
from .config import MAX_SEED, ConfigError


def add_classifier_arguments(parser):
    parser.add_argument("--out", required=True, help="a .pt file")
    parser.add_argument("--arch", choices=tuple(CLASSIFIERS), default="cnn",
                        help="architecture: a 1-D CNN, or a bidirectional GRU (a second, independent feature extractor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    add_dataset_arguments(parser)


def add_dataset_arguments(parser):
    """--dataset, --data-dir and --cache: the data set a classifier trains on and where its files are."""
    from .datasets import DATASETS

    parser.add_argument("--dataset", choices=DATASETS, default="mnist1d", help="the data set (docs/datasets.md)")
    parser.add_argument("--data-dir", help="folder of the image data sets' files (default: $PYDIFFUSION_DATA or "
                                           "~/.cache/pydiffusion/data)")
    parser.add_argument("--cache", help="MNIST-1D cache folder (default: $PYDIFFUSION_CACHE or ~/.cache/pydiffusion)")


def add_quality_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    parser.add_argument("--classifier", required=True, nargs="+", metavar="FILE",
                        help="reference classifiers, from `pydiffusion classifier`; the first one's figures are unsuffixed, "
                             "each other one's are suffixed with its architecture (fd_1d_gru, ...)")
    parser.add_argument("--n", type=int, default=1000, help="samples per measurement")
    parser.add_argument("--draws", type=int, default=1, help="independent sample sets; figures are their mean")
    parser.add_argument("--seed", type=int, default=0, help="seed of the samples")
    parser.add_argument("--out", required=True, help="a .json file")


def load_classifiers(paths, dataset) -> list:
    """The classifiers of `--classifier` files, which must be of different architectures (they name the keys) and
    trained on `dataset`."""
    from .classifier import classifier_name, load_classifier

    models = [load_classifier(p, dataset)[0] for p in paths]
    names = [classifier_name(m) for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"--classifier files {', '.join(map(str, paths))} are of architectures {', '.join(names)}; "
                          f"give at most one of each")
    return models


def check_quality_options(n, draws, seed=0, n_flag="--n", draws_flag="--draws"):
    if n < 10 or draws < 1 or not 0 <= seed < MAX_SEED:
        raise ConfigError(f"need {n_flag} >= 10 (samples per measurement), {draws_flag} >= 1 and --seed in [0, 2**63); "
                          f"got {n}, {draws} and {seed}")


def cmd_classifier(args):
    import torch

    from .datasets import check_files, load_dataset
    from .quality import save_classifier, train_classifier

    check_out_file(args.out, (".pt",))
    if args.threads < 0 or args.epochs < 1 or not 0 <= args.seed < MAX_SEED:
        raise ConfigError(f"need --threads >= 0, --epochs >= 1 and --seed in [0, 2**63); got {args.threads}, "
                          f"{args.epochs} and {args.seed}")
    if args.arch != "cnn" and args.dataset != "mnist1d":
        raise ConfigError(f"--arch {args.arch} reads MNIST-1D signals only; on {args.dataset} use --arch cnn")
    check_files(args.dataset, args.data_dir)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir, args.cache)
    model, acc = train_classifier(*data, seed=args.seed, epochs=args.epochs, arch=args.arch)
    save_classifier(model, acc, args.out, dataset=args.dataset)
    print(f"reference classifier ({args.arch}, {args.dataset}): test accuracy {acc:.4f} in {time.perf_counter() - t0:.0f} s; "
          f"wrote {args.out}")


def cmd_quality(args):
    from .checkpoints import load_run
    from .datasets import load_dataset
    from .files import save_json
    from .quality import evaluate_quality
    from .tracking import log_quality

    check_out_file(args.out, (".json",))
    check_quality_options(args.n, args.draws, args.seed)
    denoiser, cfg = load_run(args.run)
    first, *more = load_classifiers(args.classifier, cfg["dataset"])
    data = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["data_cache"])
    q = evaluate_quality(denoiser, cfg, first, data, n=args.n, seed=args.seed,
                         more_classifiers=more, draws=args.draws)
    save_json(q, args.out)
    log_quality(cfg, args.run, q)
    print(f"guided accuracy {q['sample_acc_guided']:.3f}, FD-1D {q['fd_1d']:.3f} (floor {q['fd_floor']:.3f}), "
          f"coverage {q['coverage_entropy']:.3f}; wrote {args.out}")


def evaluate_samples(denoiser, cfg, data, tracker, run_dir, classifiers, n_quality, n_samples, draws=1):
    """What `pydiffusion quality` and `pydiffusion sample` (with its defaults; n_samples None: the config's)
    write, into RUN/quality.json and RUN/samples.pt, in the training process: one process per grid job
    instead of three."""
    from . import sample_command
    from .files import save_json
    from .quality import evaluate_quality
    from .sampling import draw_class_samples

    run_dir = Path(run_dir)
    first, *more = classifiers
    q = evaluate_quality(denoiser, cfg, first, data, n=n_quality, seed=0, more_classifiers=more, draws=draws)
    save_json(q, run_dir / "quality.json")
    tracker.summary(q)
    settings = sample_command.sample_settings(cfg, denoiser.path)
    n = cfg["n_samples"] if n_samples is None else n_samples
    x, y = draw_class_samples(denoiser, n, **settings, seed=0)
    sample_command.write_samples(x, y, {**settings, "seed": 0}, run_dir / "samples.pt")
    tracker.log_samples(x, y, denoiser)
    print(f"guided accuracy {q['sample_acc_guided']:.3f}, FD-1D {q['fd_1d']:.3f} (floor {q['fd_floor']:.3f}); "
          f"wrote {run_dir / 'quality.json'} and {run_dir / 'samples.pt'}")
