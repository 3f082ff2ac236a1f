"""pydiffusion command line: data, train, evaluate, sample, plot, classifier, noisy-classifier, quality, doctor.

Bad input (a config error, a missing or broken file, a busy run directory) is one line on
stderr and exit status 2, before any work starts; so is a training run that cannot go on.
Warnings are one line each. Progress (the pydiffusion loggers) and each command's result go to stdout.
"""
import argparse
import logging
import os
import platform
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

from . import noisy_classifier_command, quality_command, sample_command
from .checks import check_out_file
from .config import CHOICES, ConfigError, load_config


def cmd_data(args):
    from .data import default_cache_dir
    from .datasets import check_files, is_image, load_dataset

    folder = check_files(args.dataset, args.data_dir)
    x, _, x_test, _ = load_dataset(args.dataset, args.data_dir, args.cache)
    if not is_image(args.dataset):
        print(f"MNIST-1D: {x.shape[0]} train, {x_test.shape[0]} test signals of length {x.shape[1]} "
              f"cached in {args.cache or default_cache_dir()}")
    else:
        where = "bundled with scikit-learn" if args.dataset == "digits" else f"read from {folder}"
        print(f"{args.dataset}: {x.shape[0]} train, {x_test.shape[0]} test images of {' x '.join(map(str, x.shape[1:]))} "
              f"(channels x height x width), {where}")


def cmd_train(args):
    from .datasets import check_files
    from .training import train

    cfg = load_config(args.config, args.set)
    check_files(cfg["dataset"], cfg["data_dir"])  # missing data files stop the run before any work
    evaluate = None
    if args.classifier:
        quality_command.check_quality_options(args.quality_samples, args.quality_draws, n_flag="--quality-samples",
                                              draws_flag="--quality-draws")
        if args.samples is not None and args.samples < 1:
            raise ConfigError(f"need --samples >= 1; got {args.samples}")
        classifiers = quality_command.load_classifiers(args.classifier, cfg["dataset"])  # a bad file stops the run before any training

        def evaluate(denoiser, cfg, data, tracker):
            quality_command.evaluate_samples(denoiser, cfg, data, tracker, args.out, classifiers, args.quality_samples,
                                             args.samples, args.quality_draws)

    metrics = train(cfg, args.out, wait=args.wait, restart_on_config_change=args.restart_on_config_change,
                    evaluate=evaluate)
    print(f"test_mse={metrics['test_mse']:.4f} (forward {metrics['test_mse_forward']:.4f}, inverse "
          f"{metrics['test_mse_inverse']:.4f}) test_kl={metrics['test_kl']:.4f} nats/dim "
          f"in {metrics['train_time_s']:.1f} s; wrote {Path(args.out) / 'metrics.json'}")


def cmd_evaluate(args):
    from .checkpoints import load_run, read_run
    from .datasets import load_dataset
    from .files import save_json
    from .models import count_parameters
    from .training import evaluate_run

    out = check_out_file(args.out or Path(args.run) / "metrics.json", (".json",))
    denoiser, cfg = load_run(args.run)
    _, _, x_test, y_test = load_dataset(cfg["dataset"], cfg["data_dir"], cfg["data_cache"])
    history = read_run(args.run)["history"]
    metrics = evaluate_run(denoiser, cfg, history, x_test, y_test, count_parameters(denoiser.model))
    save_json(metrics, out)
    print(f"test_mse={metrics['test_mse']:.4f} test_kl={metrics['test_kl']:.4f}; wrote {out}")


def cmd_plot(args):
    from .figures import loss_curves
    from .files import UnreadableFileError, load_json

    out = check_out_file(args.out, (".png",))
    file = Path(args.run) / "history.json"
    fix = f"train first with `pydiffusion train --out {args.run}`"
    history = load_json(file, "history", fix)
    if not isinstance(history, list) or not history:
        raise UnreadableFileError(f"history {file} holds no epochs; {fix}")
    loss_curves(history, out, f"{args.run}: training loss per epoch")
    print(f"{len(history)} epochs of {file}; wrote {out}")


def cmd_doctor(args):
    """Pre-flight check: every part a run needs, one line each; exit 1 if any fails."""
    failed = False

    def check(name, fn):
        nonlocal failed
        try:
            print(f"ok    {name}: {fn()}")
        except Exception as e:  # report every failure, not just the first
            failed = True
            print(f"FAIL  {name}: {type(e).__name__}: {e}")

    def imports():
        import mnist1d  # noqa: F401  (imported to check that it imports)
        import torch
        import wandb
        import yaml  # noqa: F401
        return f"python {platform.python_version()}, torch {torch.__version__}, wandb {wandb.__version__}"

    def backend():
        from . import ops
        return ops.backend("cpu")

    def wandb_mode():
        from .tracking import has_api_key
        where = "WANDB_API_KEY set" if os.environ.get("WANDB_API_KEY") else (
            "WANDB_API_KEY not set, key from `wandb login` found" if has_api_key() else "WANDB_API_KEY not set, no netrc key")
        return f"{where}; wandb_mode online would run {'online' if has_api_key() else 'offline'}"

    def data():
        from .data import load_mnist1d
        t0 = time.perf_counter()
        x, _, x_test, _ = load_mnist1d()
        return f"{x.shape[0]}+{x_test.shape[0]} signals in {time.perf_counter() - t0:.1f} s"

    def cuda():
        import torch
        if not torch.cuda.is_available():
            return "no CUDA GPU (training runs on the CPU)"
        from . import ops
        return f"{torch.cuda.get_device_name()} (ops backend {ops.backend('cuda')})"

    for name, fn in [("imports", imports), ("ops backend", backend), ("W&B", wandb_mode), ("data", data), ("CUDA", cuda)]:
        check(name, fn)
    return 1 if failed else 0


class _Help(argparse.HelpFormatter):
    """--help shows each option's default, unless it has none or its help already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        flag = action.nargs == 0  # --wait and friends: no value to show
        if not flag and action.default not in (None, argparse.SUPPRESS, []) and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    print(f"pydiffusion: warning: {' '.join(str(message).split())}", file=sys.stderr)


def build_parser():
    p = _Parser(prog="pydiffusion", description=__doc__.splitlines()[0], formatter_class=_Help)
    p.add_argument("--version", action="version", version=f"%(prog)s {version('pydiffusion-mnist1d')}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def command(name, fn, help):
        s = sub.add_parser(name, help=help, description=help, formatter_class=_Help)
        s.set_defaults(fn=fn)
        return s

    s = command("data", cmd_data, "generate and cache MNIST-1D, or check and read an image data set")
    s.add_argument("--dataset", default="mnist1d", choices=CHOICES["dataset"], help="the data set (docs/datasets.md)")
    s.add_argument("--data-dir", help="folder of the image sets' files (default: $PYDIFFUSION_DATA or "
                                      "~/.cache/pydiffusion/data)")
    s.add_argument("--cache", help="MNIST-1D's cache folder (default: $PYDIFFUSION_CACHE or ~/.cache/pydiffusion)")

    s = command("train", cmd_train, "train one configuration (resumes from OUT/checkpoint.pt)")
    s.add_argument("--config", help="YAML file of config keys (every key, its default and its valid values: "
                                    "pydiffusion/config.py)")
    s.add_argument("--out", required=True, help="run directory")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys (values are YAML)")
    s.add_argument("--wait", action="store_true",
                   help="if another process trains into OUT, wait for it and resume instead of stopping")
    s.add_argument("--restart-on-config-change", action="store_true",
                   help="a checkpoint in OUT of a different configuration is discarded instead of stopping "
                        "(the workflow's choice: a changed grid retrains)")
    s.add_argument("--classifier", nargs="+", metavar="FILE",
                   help="after training, also write OUT/quality.json (as `pydiffusion quality`) and OUT/samples.pt (as "
                        "`pydiffusion sample`) with these reference classifiers")
    s.add_argument("--quality-samples", type=int, default=1000, help="with --classifier: samples per quality measurement")
    s.add_argument("--quality-draws", type=int, default=1, help="with --classifier: independent sample sets per measurement")
    s.add_argument("--samples", type=int, help="with --classifier: samples written to OUT/samples.pt (default: the "
                                               "config's n_samples)")

    s = command("evaluate", cmd_evaluate, "recompute a run's test metrics with its EMA weights")
    s.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    s.add_argument("--out", help="metrics file (default: RUN/metrics.json)")

    s = command("sample", sample_command.cmd_sample, "draw class-conditional samples from a trained run")
    sample_command.add_arguments(s)

    s = command("plot", cmd_plot, "plot a run's loss curves: the total and every component per epoch, log scale")
    s.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`)")
    s.add_argument("--out", required=True, help="a .png file")

    s = command("classifier", quality_command.cmd_classifier,
                "train a reference MNIST-1D classifier (for FD-1D and sample accuracy)")
    quality_command.add_classifier_arguments(s)

    s = command("noisy-classifier", noisy_classifier_command.cmd_noisy_classifier,
                "train the noise-aware classifier p(y | x_t, t) of one noise path (for classifier guidance)")
    noisy_classifier_command.add_arguments(s)

    s = command("quality", quality_command.cmd_quality,
                "sample quality of a run: accuracy, FD-1D and its floor, coverage, copying")
    quality_command.add_quality_arguments(s)

    command("doctor", cmd_doctor, "check imports, ops backend, W&B mode, data generation and CUDA")
    return p


def main(argv=None):
    from .files import RunLockedError, UnreadableFileError
    from .training import TrainingError

    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    # progress lines on stdout, as plain lines; stderr stays for the one error line
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("pydiffusion")
    package_logger.setLevel(logging.INFO)
    package_logger.addHandler(progress)
    try:
        return args.fn(args) or 0
    except (ConfigError, FileNotFoundError, UnreadableFileError, RunLockedError, TrainingError) as e:
        print(f"pydiffusion {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pydiffusion {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        package_logger.removeHandler(progress)  # a second call in this process must not print every line twice


if __name__ == "__main__":
    sys.exit(main())
