"""Snakemake script: the ablation study's report (pydiffusion.ablation_report.aggregate) into the results folder;
its progress lines (the pydiffusion loggers) go to the rule's log: file."""
import logging
import sys

from pydiffusion.ablation_report import aggregate
from pydiffusion.files import UnreadableFileError

sm = snakemake  # noqa: F821 (snakemake injects it)
with open(sm.log[0], "w") as log:
    logging.basicConfig(stream=log, level=logging.INFO, format="%(message)s")
    try:
        aggregate(sm.params.runs, sm.params.results, sm.params.section, sm.params.configs, sm.params.families,
                  sm.params.cells, dict(zip(sm.params.section["classifiers"], sm.input.classifiers)),
                  data_cache=sm.input.data[0], n=sm.params.n)
    except (UnreadableFileError, FileNotFoundError) as e:  # a broken input: name it in one line, no traceback
        logging.error(f"pydiffusion ablations report: error: {e}")
        print(f"pydiffusion ablations report: error: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        logging.exception("the ablation report failed")
        sys.exit(1)
