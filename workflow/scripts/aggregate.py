"""Snakemake script: aggregate every run of the grid into summary.json/csv, report.md and figures."""
from pathlib import Path

from pydiffusion.reporting.aggregate import aggregate
from pydiffusion.snakemake_script import run_logged

sm = snakemake  # noqa: F821 (snakemake injects it)
noisy = {Path(f).stem: f for f in sm.input.noisy_classifiers}  # {noise}.pt
run_logged(sm.log[0], "aggregate",
           lambda: aggregate(sm.params.runs, sm.params.results, classifier=sm.input.classifier[0],
                             data_cache=sm.input.data[0], n=sm.params.n, threads=sm.threads,
                             noisy_classifiers=noisy))
