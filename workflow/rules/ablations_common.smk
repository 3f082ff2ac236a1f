# The ablation study's plan (config/ablations.yaml), read once before any job: its configurations, runs, and
# what the progress lines and the jobs' priorities and time limits need. workflow/rules/ablations.smk has its
# rules.
import re

from pydiffusion.ablations.plan import read_study

try:
    STUDY = read_study(config["ablations"], config["train"])
except ConfigError as e:
    config_error(("ablations",), str(e))
A = config["ablations"]
CLASSIFIER_FILES = [f"{R}/classifier-{arch}.pt" for arch in A["classifiers"]]
ABLATION_RUNS = {
    f"{R}/runs/{name}/{cell}/seed{s}": name
    for name in STUDY.configs
    for cell in STUDY.cells
    for s in SEEDS
}
# the study's progress lines (Snakefile onstart): the cost of an epoch and the epochs of each run
EPOCH_COST = {run: STUDY.epoch_cost(name) for run, name in ABLATION_RUNS.items()}
RUN_EPOCHS = {run: STUDY.configs[name]["epochs"] for run, name in ABLATION_RUNS.items()}
RUN_DIR = f"{R}/runs/{{ablation}}/{{loss}}-{{noise}}/seed{{seed}}"


def run_cost(w) -> float:
    """A job's training work in implicit epochs of the default network: its priority (dearest first)."""
    return STUDY.epoch_cost(w.ablation) * STUDY.configs[w.ablation]["epochs"]


def run_minutes(w, attempt) -> int:
    """The SLURM time limit: resources.train.runtime for a job of base_epochs semi-implicit epochs, scaled by
    the job's work, times the attempt number."""
    scale = run_cost(w) / (TRAINING_PASSES["semi_implicit"] * A["base_epochs"])
    return round(TRAIN_RES.get("runtime", 60) * attempt * max(1.0, scale))
