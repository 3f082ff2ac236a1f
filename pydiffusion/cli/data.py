"""`pydiffusion data`: MNIST-1D generated and cached, or an image data set's files checked and read."""
from pydiffusion.cli.options import add_dataset_arguments
from pydiffusion.data.datasets import check_files, is_image, load_dataset
from pydiffusion.data.mnist1d import default_cache_dir
from pydiffusion.files import check_writable

HELP = "generate and cache MNIST-1D, or check and read an image data set"


def add_arguments(parser):
    add_dataset_arguments(parser)


def run(args):
    folder = check_files(args.dataset, args.data_dir)
    if not is_image(args.dataset):  # caching it is this command's job
        check_writable(args.cache or default_cache_dir(), "--cache")
    x, _, x_test, _ = load_dataset(args.dataset, args.data_dir, args.cache)
    if not is_image(args.dataset):
        print(f"MNIST-1D: {x.shape[0]} train, {x_test.shape[0]} test signals of length {x.shape[1]} "
              f"cached in {args.cache or default_cache_dir()}")
    else:
        where = "bundled with scikit-learn" if args.dataset == "digits" else f"read from {folder}"
        print(f"{args.dataset}: {x.shape[0]} train, {x_test.shape[0]} test images of {' x '.join(map(str, x.shape[1:]))} "
              f"(channels x height x width), {where}")
