"""The ablation study's report job: summary.json, report.md (pydiffusion.ablations.text) and the figures
(pydiffusion.ablations.figures) of the study's runs, from the numbers of pydiffusion.ablations.summary."""
import logging
from pathlib import Path

from pydiffusion.ablations.figures import curves_figure, effects_figure
from pydiffusion.ablations.stats import judged_metrics
from pydiffusion.ablations.summary import compare, floors, load_study, summarize
from pydiffusion.ablations.text import markdown
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.files import save_figure, save_json, save_text

logger = logging.getLogger(__name__)


def aggregate(runs: dict, out_dir, section: dict, configs: dict, families: dict, cells, classifier_files: dict,
              data_cache=None, n=1000):
    """The report job: summary.json, report.md and figures/ of the study's runs into out_dir."""
    out_dir = Path(out_dir)
    classifiers = list(classifier_files)
    records = load_study(runs)
    logger.info(f"{len(records)} runs of {len(configs)} configurations in {len(cells)} cells")
    floor = floors(classifier_files, load_mnist1d(data_cache), n, section["floor_subsets"])
    write_report(records, out_dir, section, configs, families, cells, classifiers, floor)


def write_report(records, out_dir, section: dict, configs: dict, families: dict, cells, classifiers, floor: dict):
    """summary.json, report.md and figures/ of the study's records (load_study's, or a summary.json's "runs")."""
    out_dir = Path(out_dir)
    summary = summarize(records, configs, cells, classifiers, floor)
    comparisons = compare(records, families, cells, classifiers)
    save_figure(curves_figure(summary, families, cells), out_dir / "figures" / "curves.png")
    save_figure(effects_figure(comparisons, judged_metrics(classifiers)), out_dir / "figures" / "effects.png")
    save_json({"section": section, "floors": floor, "configurations": summary, "comparisons": comparisons,
               "runs": [{k: v for k, v in r.items() if k != "history"} for r in records]}, out_dir / "summary.json")
    save_text(markdown(section, configs, summary, comparisons, floor, classifiers, len(records)), out_dir / "report.md")
    logger.info(f"wrote {out_dir / 'report.md'}, summary.json and figures/")
