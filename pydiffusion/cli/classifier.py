"""`pydiffusion classifier`: a reference classifier (pydiffusion/nets/classifiers.py), the feature extractor of
FD-1D and the judge of sample accuracy. Every bad value is a ConfigError (one line, exit status 2) before any work."""
import time

import torch

from pydiffusion.cli.options import add_dataset_arguments, check_out_file
from pydiffusion.config import MAX_SEED, MNIST1D, ConfigError
from pydiffusion.data.datasets import check_files, load_dataset
from pydiffusion.nets.classifiers import CLASSIFIERS, save_classifier, train_classifier

HELP = "train a reference MNIST-1D classifier (for FD-1D and sample accuracy)"


def add_arguments(parser):
    parser.add_argument("--out", required=True, help="a .pt file")
    parser.add_argument("--arch", choices=tuple(CLASSIFIERS), default="cnn",
                        help="architecture: a 1-D CNN, or a bidirectional GRU (a second, independent feature extractor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 keeps torch's default)")
    add_dataset_arguments(parser)


def run(args):
    check_out_file(args.out, (".pt",))
    if args.threads < 0 or args.epochs < 1 or not 0 <= args.seed < MAX_SEED:
        raise ConfigError(f"need --threads >= 0, --epochs >= 1 and --seed in [0, 2**63); got {args.threads}, "
                          f"{args.epochs} and {args.seed}")
    if args.arch != "cnn" and args.dataset != MNIST1D:
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
