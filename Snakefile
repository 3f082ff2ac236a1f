# The pydiffusion experiment grid: loss x noise x training x seeds, aggregated into one report.
#
#     snakemake --profile profiles/local                       # this machine (make run)
#     snakemake --profile profiles/slurm                       # a SLURM cluster
#     snakemake --profile profiles/local --configfile config/smoke.yaml
#     snakemake --report report.html                           # browsable HTML report
#     snakemake --profile profiles/local --configfile config/ablations.yaml   # the ablation study instead
#
# The config keys are described in config/README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


envvars:
    "PATH",


include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"


# a config with an `ablations:` section (config/ablations.yaml) runs the ablation study, not the grid
if ABLATIONS:

    include: "workflow/rules/ablations_common.smk"
    include: "workflow/rules/ablations.smk"

else:

    include: "workflow/rules/report.smk"


# Every progress_seconds: grid jobs done of all and the time left (pydiffusion/progress.py); only in
# the main Snakemake process (not in dry runs, nor in the jobs a cluster runs).
onstart:
    GridProgress(EPOCH_COST, RUN_EPOCHS).report_every(
        config["progress_seconds"], logger.info
    )


localrules:
    all,
    train_config,


rule all:
    input:
        rules.ablation_report.output if ABLATIONS else rules.aggregate.output,
