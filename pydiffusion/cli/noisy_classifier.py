"""`pydiffusion noisy-classifier`: the noise-aware classifier p(y | x_t, t) of classifier guidance, for one noise
path (pydiffusion/nets/noisy_classifier.py). Every bad value is a ConfigError (one line, exit status 2) before any work."""
import time

import torch

from pydiffusion.cli.options import add_dataset_arguments, check_out_file
from pydiffusion.config import CHOICES, MAX_SEED, ConfigError, check_value
from pydiffusion.data.datasets import check_files, load_dataset
from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.nets.noisy_classifier import save_noisy_classifier, train_noisy_classifier

HELP = "train the noise-aware classifier p(y | x_t, t) of one noise path (for classifier guidance)"


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="a .pt file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    parser.add_argument("--noise", choices=CHOICES["noise"], default="gaussian", help="the noise path")
    parser.add_argument("--T", type=int, default=20, help="diffusion steps of the path")
    parser.add_argument("--schedule", choices=CHOICES["schedule"], default="linear", help="beta schedule (gaussian)")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs")
    add_dataset_arguments(parser)


def run(args):
    check_value("--T", "T", args.T)
    if args.epochs < 1:
        raise ConfigError(f"--epochs is {args.epochs}; it must be >= 1")
    check_files(args.dataset, args.data_dir)
    check_out_file(args.out, (".pt",))
    if args.threads < 0 or not 0 <= args.seed < MAX_SEED:
        raise ConfigError(f"need --threads >= 0 and --seed in [0, 2**63); got {args.threads} and {args.seed}")
    if args.threads:
        torch.set_num_threads(args.threads)
    path = NoisePath(args.noise, args.T, args.schedule)
    t0 = time.perf_counter()
    data = load_dataset(args.dataset, args.data_dir, args.cache)
    model, acc = train_noisy_classifier(*data, path, seed=args.seed, epochs=args.epochs)
    save_noisy_classifier(model, path, acc, args.out, dataset=args.dataset)
    by_t = ", ".join(f"t={t}: {a:.3f}" for t, a in acc.items())
    print(f"noisy classifier for {path} on {args.dataset}: test accuracy {by_t} in {time.perf_counter() - t0:.0f} s; wrote {args.out}")
