"""Snakemake script: the ablation study's report (pydiffusion.ablations.report_job.aggregate) into the results folder."""
from pydiffusion.ablations.report_job import aggregate
from pydiffusion.snakemake_script import run_logged

sm = snakemake  # noqa: F821 (snakemake injects it)
run_logged(sm.log[0], "ablations report",
           lambda: aggregate(sm.params.runs, sm.params.results, sm.params.section, sm.params.configs,
                             sm.params.families, sm.params.cells,
                             dict(zip(sm.params.section["classifiers"], sm.input.classifiers)),
                             data_cache=sm.input.data[0], n=sm.params.n))
