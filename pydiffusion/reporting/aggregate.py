"""The grid's aggregate job: summary.json, summary.csv, report.md (pydiffusion.reporting.report) and the figures
(pydiffusion.reporting.grid_figures) of the grid's runs, with the sampler and guidance comparisons on the best
configuration."""
import logging
from pathlib import Path

import torch

from pydiffusion.checkpoints import load_denoiser
from pydiffusion.data.datasets import load_dataset
from pydiffusion.data.splits import evaluation_data
from pydiffusion.evaluation.quality import compare_guidance, compare_samplers
from pydiffusion.files import save_json, save_text
from pydiffusion.nets.classifiers import load_classifier
from pydiffusion.nets.noisy_classifier import load_noisy_classifier
from pydiffusion.reporting.export import export_run
from pydiffusion.reporting.figures import guidance_plot, model_figures
from pydiffusion.reporting.grid_figures import grid_figures
from pydiffusion.reporting.grid_stats import best_configuration, config_name, load_runs, paired, summarize
from pydiffusion.reporting.report import markdown, write_csv

logger = logging.getLogger(__name__)


BEST_MODEL = "best-model"  # the export of the best configuration's first seed, in the report's folder


def best_run(records, best) -> str:
    """The run directory of the best configuration's lowest seed: the model the report compares samplers on."""
    return next(r for r in sorted(records, key=lambda r: r["seed"]) if config_name(r) == best)["run"]


def best_model_samplers(records, best, out_dir, classifier, data_cache, n, noisy_classifiers=None):
    """Samplers compared on the best configuration's first seed (samplers.json), and its figures; with a noise-aware
    classifier of its path (noisy_classifiers: {noise: file}), the two kinds of guidance too (guidance.json).
    Returns the rows of the two comparisons (None for guidance without a classifier)."""
    run = best_run(records, best)
    logger.info(f"comparing samplers on {run}")
    denoiser, cfg = load_denoiser(run)
    data = evaluation_data(load_dataset(cfg["dataset"], cfg["data_dir"], data_cache), cfg["validation_fraction"],
                           cfg["eval_split"])
    reference = load_classifier(classifier, cfg["dataset"])[0]
    rows = compare_samplers(denoiser, cfg, reference, data, n=n)
    save_json({"run": run, "samplers": rows}, out_dir / "samplers.json")
    model_figures(denoiser, cfg, data, rows, out_dir / "figures")
    if not noisy_classifiers:
        return rows, None
    logger.info(f"comparing classifier-free and classifier guidance on {run}")
    noisy = load_noisy_classifier(noisy_classifiers[cfg["noise"]], denoiser.path, cfg["dataset"])
    guidance_rows = compare_guidance(denoiser, cfg, reference, noisy, data, n=n)
    save_json({"run": run, "guidance": guidance_rows}, out_dir / "guidance.json")
    guidance_plot(guidance_rows, out_dir / "figures" / "guidance.png")
    return rows, guidance_rows


def aggregate(run_dirs, out_dir, classifier=None, data_cache=None, n=1000, threads=0, noisy_classifiers=None):
    """Write summary.json, summary.csv, report.md and figures/ for the runs into out_dir; with a reference
    classifier, also the sampler comparison, figures and export (best-model/, pydiffusion.reporting.export) of the
    best configuration, and with noise-aware classifiers ({noise: file}) its guidance comparison."""
    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    records = load_runs(run_dirs)
    summary = summarize(records)
    cells = paired(records)
    best, best_key = best_configuration(summary)
    logger.info(f"{len(records)} runs of {len(summary)} configurations; the best is {best} (lowest mean {best_key})")
    grid_figures(records, summary, cells, out_dir / "figures")
    samplers, guidance = None, None
    if classifier:  # the best model's own evaluations, which read its weights
        samplers, guidance = best_model_samplers(records, best, out_dir, classifier, data_cache, n, noisy_classifiers)
        export_run(best_run(records, best), out_dir / BEST_MODEL)
    save_json({"configurations": summary, "paired": cells, "best": {"config": best, "by": best_key},
               "runs": [{k: v for k, v in r.items() if k != "history"} for r in records]}, out_dir / "summary.json")
    write_csv(summary, out_dir / "summary.csv")
    save_text(markdown(records, summary, cells, best, best_key, samplers, guidance), out_dir / "report.md")
    logger.info(f"wrote {out_dir / 'report.md'}, summary.json, summary.csv and figures/")
