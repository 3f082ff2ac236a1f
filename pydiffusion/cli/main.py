"""pydiffusion command line: data, train, evaluate, sample, export, plot, classifier, noisy-classifier, quality, doctor.

Bad input (a config error, a missing or broken file, a busy run directory) is one line on
stderr and exit status 2, before any work starts; so is a training run that cannot go on.
Warnings are one line each. Progress (the pydiffusion loggers) and each command's result go to stdout.
"""
import argparse
import logging
import sys
import warnings

from pydiffusion.cli import classifier, data, doctor, evaluate, export, noisy_classifier, plot, quality, sample, train
from pydiffusion.config import VERSION, ConfigError
from pydiffusion.diffusion.ops import requested_backend
from pydiffusion.files import RunLockedError, UnreadableFileError, WriteError
from pydiffusion.training.loop import TrainingError

# each command is a module with HELP, add_arguments(parser) and run(args)
COMMANDS = {"data": data, "train": train, "evaluate": evaluate, "sample": sample, "export": export, "plot": plot,
            "classifier": classifier, "noisy-classifier": noisy_classifier, "quality": quality, "doctor": doctor}


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
    p.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, module in COMMANDS.items():
        s = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=_Help)
        s.set_defaults(fn=module.run)
        module.add_arguments(s)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what `train` records as the command that trained a run
    warnings.showwarning = _one_line_warning
    # progress lines on stdout, as plain lines; stderr stays for the one error line
    progress = logging.StreamHandler(sys.stdout)
    progress.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("pydiffusion")
    package_logger.setLevel(logging.INFO)
    package_logger.addHandler(progress)
    try:
        requested_backend()  # an unknown PYDIFFUSION_BACKEND stops every command before any work
        return args.fn(args) or 0
    except (ConfigError, FileNotFoundError, UnreadableFileError, RunLockedError, TrainingError, WriteError) as e:
        print(f"pydiffusion {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pydiffusion {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        package_logger.removeHandler(progress)  # a second call in this process must not print every line twice


if __name__ == "__main__":
    sys.exit(main())
