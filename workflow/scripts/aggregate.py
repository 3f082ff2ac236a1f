"""Snakemake script: aggregate every run of the grid into summary.json/csv, report.md and figures; its
progress lines (the pydiffusion loggers) go to the rule's log: file."""
import logging
import sys
from pathlib import Path

from pydiffusion.files import UnreadableFileError
from pydiffusion.report import aggregate

with open(snakemake.log[0], "w") as log:  # noqa: F821 (snakemake injects it)
    logging.basicConfig(stream=log, level=logging.INFO, format="%(message)s")
    try:
        noisy = {Path(f).stem: f for f in snakemake.input.noisy_classifiers}  # noqa: F821 ({noise}.pt)
        aggregate(snakemake.params.runs, snakemake.params.results, classifier=snakemake.input.classifier[0],  # noqa: F821
                  data_cache=snakemake.input.data[0], n=snakemake.params.n, threads=snakemake.threads,  # noqa: F821
                  noisy_classifiers=noisy)
    except (UnreadableFileError, FileNotFoundError) as e:  # a broken input: name it in one line, no traceback
        logging.error(f"pydiffusion aggregate: error: {e}")
        print(f"pydiffusion aggregate: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        logging.exception("aggregation failed")
        sys.exit(1)
