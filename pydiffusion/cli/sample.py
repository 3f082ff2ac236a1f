"""`pydiffusion sample`: class-conditional samples of a trained run into a .pt file (x, y and the settings),
a .npy file (x) or a .png grid (one row per class, each led by a real test sample of it, titled with the sampler,
steps and guidance), and optionally one sample's reverse trajectory as a GIF.

The sampler settings default to the run's own config keys sampler, sample_steps, eta, guidance and n_samples.
Every bad value is a ConfigError (one line, exit status 2) before any sampling.
"""
import tempfile
import time
from pathlib import Path

from pydiffusion.cli.options import check_out_file
from pydiffusion.config import CHOICES, ConfigError, check_classifier_scale, check_value
from pydiffusion.data.datasets import held_out_if_present
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.diffusion.samplers import timesteps_for
from pydiffusion.files import save_npy, save_torch
from pydiffusion.nets.noisy_classifier import load_noisy_classifier
from pydiffusion.reporting.figures import samples_grid, trajectory_gif
from pydiffusion.runs import load_run
from pydiffusion.training.tracking import resume_tracker

HELP = "draw class-conditional samples from a trained run"
OUT_SUFFIXES = (".pt", ".npy", ".png")
GRID_COLUMNS = 16  # samples per class in a .png grid: more panels would be too small to read


def add_arguments(parser):
    parser.add_argument("--run", required=True, help="a run directory (from `pydiffusion train`) or an export (from "
                                                     "`pydiffusion export`)")
    parser.add_argument("--sampler", choices=CHOICES["sampler"], help="reverse process (default: the run's sampler)")
    parser.add_argument("--steps", type=int, help="reverse steps; ddpm takes all T (default: the run's sample_steps)")
    parser.add_argument("--eta", type=float, help="ddim noise: 0 deterministic, 1 DDPM-like; ddpm is 1, dpmpp_2m 0 "
                                                  "(default: the run's eta)")
    parser.add_argument("--guidance", type=float,
                        help="classifier-free guidance scale; 0 = unconditional (default: the run's guidance)")
    parser.add_argument("--classifier-scale", type=float, default=0.0, metavar="C",
                        help="classifier guidance scale (needs --noisy-classifier); 0 = none")
    parser.add_argument("--noisy-classifier", metavar="FILE", help="the noise-aware classifier of the run's path, "
                                                                   "from `pydiffusion noisy-classifier`")
    parser.add_argument("--class", dest="label", type=int, metavar="K", help="draw only this class, 0..9 (default: 0..9 in turn)")
    parser.add_argument("--n", type=int, help="number of samples (default: the run's n_samples)")
    parser.add_argument("--seed", type=int, default=0, help="seed of x_T and of the sampler's noise")
    parser.add_argument("--out", required=True, help=f"a .pt file (x [N, 40] or images [N, C, H, W], y [N] and the settings), a .npy file "
                                                     f"(x) or a .png grid (one row per class, at most {GRID_COLUMNS} "
                                                     f"samples each)")
    parser.add_argument("--trajectory", help="also write the first sample's reverse trajectory, x_T to x_0, as this "
                                             "animated .gif")


def write_samples(x, y, settings: dict, out, real=None):
    """Samples x [N, L] with labels y into `out` by its suffix: .pt (x, y and the settings), .npy (x) or .png (titled
    with the settings; with `real` (x_test, y_test), each class row led by a real test sample of it)."""
    if out.suffix == ".pt":
        save_torch({"x": x, "y": y, **settings}, out)
    elif out.suffix == ".npy":
        save_npy(x.numpy(), out)
    else:
        title = f"{settings['sampler']}, {settings['steps']} steps, guidance {settings['guidance']:g}"
        if settings.get("classifier_scale"):
            title += f", classifier scale {settings['classifier_scale']:g}"
        samples_grid(x, y, out, GRID_COLUMNS, title=title, real=real)


def track_samples(tracker, x, y, trajectory, settings: dict, T: int):
    """A figure of the samples x with labels y and a GIF of the first one's reverse trajectory (x_T, ..., x_0 as
    the sampler drew them) into the run's W&B run; nothing where the run is not tracked."""
    if tracker is None or not tracker.active:
        return
    with tempfile.TemporaryDirectory() as tmp:
        png, gif = Path(tmp) / "samples.png", Path(tmp) / "trajectory.gif"
        samples_grid(x, y, png, per_class=8)
        trajectory_gif([x_t[0] for x_t in trajectory], timesteps_for(T, settings["steps"]), gif)
        tracker.log_media({"samples": (png, "samples, one row per class"),
                           "trajectory": (gif, f"the first sample, {settings['sampler']} {settings['steps']} steps, "
                                               f"x_T to x_0")})


def run(args):
    out = check_out_file(args.out, OUT_SUFFIXES)
    gif = None if args.trajectory is None else check_out_file(args.trajectory, (".gif",), "--trajectory")
    for flag, key, value in (("--n", "n_samples", args.n), ("--steps", "sample_steps", args.steps), ("--eta", "eta", args.eta),
                             ("--guidance", "guidance", args.guidance), ("--seed", "seed", args.seed)):
        if value is not None:
            check_value(flag, key, value)
    check_classifier_scale("--classifier-scale", args.classifier_scale)
    if args.classifier_scale > 0 and args.noisy_classifier is None:
        raise ConfigError("--classifier-scale needs --noisy-classifier FILE (train one with `pydiffusion noisy-classifier`)")
    if args.label is not None and not 0 <= args.label < NUM_CLASSES:
        raise ConfigError(f"--class is {args.label}; it must be a class in 0..{NUM_CLASSES - 1}")
    trained = load_run(args.run)
    cfg, path = trained.config, trained.denoiser.path
    # Run.sample checks these two too, naming its arguments; here they name the options
    if args.steps is not None and args.steps > path.T:
        raise ConfigError(f"--steps is {args.steps}; it must be in [1, T={path.T}]")
    settings = trained.sample_settings(args.sampler, args.steps, args.eta, args.guidance)
    if args.label is not None and settings["guidance"] == 0 and args.classifier_scale == 0:
        raise ConfigError(f"--class {args.label} needs guidance > 0 or --classifier-scale > 0 (guidance 0 alone draws "
                          f"unconditional samples)")
    classifier = None
    if args.noisy_classifier is not None:
        classifier = load_noisy_classifier(args.noisy_classifier, path, cfg["dataset"])
    n = cfg["n_samples"] if args.n is None else args.n
    t0 = time.perf_counter()
    # the trajectory is (steps + 1) copies of x, small beside the model
    x, y, xs = trained.sample(n, args.label, **settings, seed=args.seed, classifier=classifier,
                              classifier_scale=args.classifier_scale, trajectory=True)
    dt = time.perf_counter() - t0
    settings["classifier_scale"] = args.classifier_scale
    # real test samples of the same classes to compare with, where the data set is here
    real = held_out_if_present(cfg["dataset"], cfg["data_dir"], cfg["data_cache"]) if out.suffix == ".png" else None
    write_samples(x, y, {**settings, "seed": args.seed}, out, real)
    if gif is not None:
        trajectory_gif([x_t[0] for x_t in xs], timesteps_for(path.T, settings["steps"]), gif)
    tracker = resume_tracker(cfg, args.run)
    if tracker is not None:
        try:
            track_samples(tracker, x, y, xs, settings, path.T)
        finally:
            tracker.finish()
    print(f"{n} samples ({settings['sampler']}, {settings['steps']} steps, guidance {settings['guidance']}) in "
          f"{dt:.2f} s; wrote {out}{'' if gif is None else f' and {gif}'}")
