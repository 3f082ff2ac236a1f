"""The pydiffusion experiment grid: loss x noise x training x seeds, aggregated into one report.

    snakemake --profile profiles/local                       # this machine (make run)
    snakemake --profile profiles/slurm                       # a SLURM cluster
    snakemake --profile profiles/local --configfile config/smoke.yaml
    snakemake --report report.html                           # browsable HTML report
"""
import yaml
from snakemake.utils import min_version, validate

from pydiffusion.config import DEFAULTS

min_version("9.0")


configfile: "config/config.yaml"

# Snakemake reads nested --config values (`train={epochs: 30}`, `seeds=[0, 1]`) as text; read them
# as YAML, as `pydiffusion train --set` does, except where the value is text by design.
TEXT_KEYS = {"results", "container"} | {k for k, v in DEFAULTS.items() if v is None or isinstance(v, str)}


def read_as_yaml(value):
    if isinstance(value, dict):
        return {k: v if k in TEXT_KEYS else read_as_yaml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [read_as_yaml(v) for v in value]
    return yaml.safe_load(value) if isinstance(value, str) else value


config.update(read_as_yaml(config))
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.aggregate.output,
