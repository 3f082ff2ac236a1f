"""`pydiffusion noisy-classifier`: the noise-aware classifier p(y | x_t, t) of classifier guidance, for one noise
path (pydiffusion/guidance.py). Every bad value is a ConfigError (one line, exit status 2) before any work."""
import time

from .checks import check_out_file
from .config import CHECKS, CHOICES, MAX_SEED, ConfigError
from .quality_command import add_dataset_arguments


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="a .pt file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--noise", choices=CHOICES["noise"], default="gaussian", help="the noise path")
    parser.add_argument("--T", type=int, default=20, help="diffusion steps of the path")
    parser.add_argument("--schedule", choices=CHOICES["schedule"], default="linear", help="beta schedule (gaussian)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    add_dataset_arguments(parser)


def _start(args):
    import torch

    check_out_file(args.out, (".pt",))
    if args.threads < 0 or not 0 <= args.seed < MAX_SEED:
        raise ConfigError(f"need --threads >= 0 and --seed in [0, 2**63); got {args.threads} and {args.seed}")
    if args.threads:
        torch.set_num_threads(args.threads)


def cmd_noisy_classifier(args):
    from .datasets import check_files, load_dataset
    from .guidance import save_noisy_classifier, train_noisy_classifier
    from .paths import NoisePath

    valid, description = CHECKS["T"]
    if not valid(args.T):
        raise ConfigError(f"--T is {args.T}; it must be {description}")
    if args.epochs < 1:
        raise ConfigError(f"--epochs is {args.epochs}; it must be >= 1")
    check_files(args.dataset, args.data_dir)
    _start(args)
    path = NoisePath(args.noise, args.T, args.schedule)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir, args.cache)
    model, acc = train_noisy_classifier(*data, path, seed=args.seed, epochs=args.epochs)
    save_noisy_classifier(model, path, acc, args.out, dataset=args.dataset)
    by_t = ", ".join(f"t={t}: {a:.3f}" for t, a in acc.items())
    print(f"noisy classifier for {path} on {args.dataset}: test accuracy {by_t} in {time.perf_counter() - t0:.0f} s; wrote {args.out}")
