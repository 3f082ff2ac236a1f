"""The options several commands share, and the checks of command-line values before any work: a bad value is a
ConfigError, one line naming the option."""
from pathlib import Path

from pydiffusion.config import CHOICES, MNIST1D, ConfigError
from pydiffusion.files import check_writable


def add_dataset_arguments(parser):
    """--dataset, --data-dir and --cache: the data set a command reads and where its files are."""
    parser.add_argument("--dataset", choices=CHOICES["dataset"], default=MNIST1D, help="the data set (docs/datasets.md)")
    parser.add_argument("--data-dir", help="folder of the image data sets' files (default: $PYDIFFUSION_DATA or "
                                           "~/.cache/pydiffusion/data)")
    parser.add_argument("--cache", help="MNIST-1D cache folder (default: $PYDIFFUSION_CACHE or ~/.cache/pydiffusion)")


def check_out_file(out, suffixes, flag="--out") -> Path:
    """An output file name: one of `suffixes`, not a directory, not under a file, in a folder that can be written."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name ending in {' or '.join(suffixes)}")
    if out.suffix not in suffixes:
        raise ConfigError(f"{flag} {out} must end in {' or '.join(suffixes)}")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{flag} {out} is under {parent}, which is a file; choose another {flag}")
            break
    check_writable(out, flag)
    return out
