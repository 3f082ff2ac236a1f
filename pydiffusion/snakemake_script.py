"""The frame of the workflow's Snakemake scripts (workflow/scripts/*.py): progress lines (the pydiffusion loggers)
go to the rule's log: file; a broken input file is named in one line on stderr, with no traceback; anything else
leaves its traceback in the log. Either way the job fails with exit status 1."""
import logging
import sys

from pydiffusion.files import UnreadableFileError


def run_logged(log_file, command, fn):
    """Run fn() with the logging frame above; `command` names the step in the error line
    ("pydiffusion <command>: error: ...")."""
    with open(log_file, "w") as log:
        handler = logging.StreamHandler(log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            fn()
        except (UnreadableFileError, FileNotFoundError) as e:
            logging.error(f"pydiffusion {command}: error: {e}")
            print(f"pydiffusion {command}: error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception:
            logging.exception(f"pydiffusion {command} failed")
            sys.exit(1)
        finally:
            root.removeHandler(handler)
