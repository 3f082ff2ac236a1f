"""Checks of command-line values before any work: a bad value is a ConfigError, one line naming the option."""
import math
from pathlib import Path

from .config import CHECKS, ConfigError


def check_out_file(out, suffixes, flag="--out") -> Path:
    """An output file name: one of `suffixes`, not a directory, not under a file."""
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
    return out


def check_option(flag, key, value):
    """A command-line value that stands in for the config key `key`, by that key's own rule (config.CHECKS)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{flag} is {value}; it must be a finite number")
    valid, description = CHECKS[key]
    if not valid(value):
        raise ConfigError(f"{flag} is {value}; it must be {description}")
