"""`export_run(run, out)`: a trained run as files this field shares models in, readable without this package:

    model.safetensors   the EMA weights (the network `Run.denoiser` wraps), safetensors
    config.json         every config key of the run (it rebuilds the network; `pydiffusion train --config` takes it)
    history.json        the training history, one record per epoch
    metrics.json        the test metrics; quality.json, the sample quality, where it was measured
    samples.png         samples of each class beside real test signals of it
    README.md           the model card: what the model is, its data, config, metrics, samples, how it was trained,
                        how to use it, license and citation

`pydiffusion.load_exported(out)` (and every command's --run) reads it back with no pickle anywhere.
"""
from pathlib import Path

from safetensors.torch import save as safetensors_bytes

from pydiffusion.checkpoints import EXPORT_CONFIG, EXPORT_HISTORY, EXPORT_WEIGHTS, is_export
from pydiffusion.config import VERSION, ConfigError
from pydiffusion.data.datasets import DESCRIPTIONS, held_out_if_present
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.evaluation.quality import quality_settings
from pydiffusion.files import check_writable, save_bytes, save_json, save_text
from pydiffusion.nets.backbones import count_parameters
from pydiffusion.reporting.figures import samples_grid
from pydiffusion.reporting.grid_stats import metric_label
from pydiffusion.reporting.markdown import fmt, md_table
from pydiffusion.runs import METRICS_FILE, QUALITY_FILE, Run, load_run
from pydiffusion.training.tracking import resume_tracker

CARD, SAMPLES_FIGURE = "README.md", "samples.png"
SAMPLES_PER_CLASS = 6
# the model card's metrics, in its order: the test metrics, then the sample quality beside its floor
CARD_TEST_METRICS = ("test_mse_forward", "test_mse_inverse", "test_kl", "psnr_t10", "ssim_t10")
CARD_QUALITY_METRICS = ("fd_1d", "fd_ratio", "sample_acc_guided", "coverage_entropy", "nn_dist")
LICENSE = "MIT"
CITATION = """@software{pydiffusion,
  title = {pydiffusion: semi-implicit vs implicit diffusion training on MNIST-1D},
  author = {{The pydiffusion authors}},
  version = {%s},
  year = {2026}
}"""


def check_export_folder(out) -> Path:
    """`out` as an export folder: new, empty, or an earlier export (rewritten); never a file or another folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not is_export(out):
        raise ConfigError(f"--out {out} holds other files; give a new or empty folder (or an earlier export)")
    check_writable(out, "--out")
    return out


def _metric_rows(values: dict, keys) -> list:
    floor = {"fd_1d": values.get("fd_floor")}  # FD-1D reads only beside its floor
    return [[f"`{k}`", metric_label(k), fmt(values[k]) + (f" (floor {fmt(floor[k])})" if floor.get(k) else "")]
            for k in keys if k in values]


def model_card(run: Run, n_params: int, figure: str, figure_settings: dict) -> str:
    """The README.md of an export of `run`, showing the samples figure `figure` drawn with `figure_settings`."""
    cfg, metrics, quality = run.config, run.metrics, run.quality
    name = f"{cfg['loss']}-{cfg['noise']}-{cfg['training']} seed {cfg['seed']}"
    training = {"implicit": "implicit (forward denoising only)",
                "semi_implicit": "semi-implicit (forward denoising and a learned inverse map, trained together)"}
    lines = [
        "---", f"license: {LICENSE.lower()}", "library_name: pydiffusion",
        f"tags: [diffusion, {cfg['dataset']}, {cfg['training'].replace('_', '-')}, class-conditional]",
        "---", "", f"# {name}: a class-conditional diffusion model of {cfg['dataset']}", "",
        f"A {cfg['model']} denoiser ({n_params:,} parameters) trained {training.get(cfg['training'], cfg['training'])} "
        f"with the {cfg['loss']} loss on the {cfg['noise']} noise path ({cfg['T']} steps, {cfg['schedule']} schedule, "
        f"{cfg['prediction']} prediction), {cfg['epochs']} epochs, by pydiffusion {VERSION}. These are its EMA "
        f"weights.", "",
        "## Use", "", "```python", "import pydiffusion", "",
        'run = pydiffusion.load_exported("path/to/this/folder")',
        "x, y = run.sample(20, label=3)  # 20 samples of class 3, with the sampler below", "```", "",
        "or from the command line: `pydiffusion sample --run path/to/this/folder --out samples.png`. Without "
        f"pydiffusion, `{EXPORT_WEIGHTS}` opens with any safetensors reader (`safetensors.torch.load_file`) and "
        f"`{EXPORT_CONFIG}` is the configuration that builds the network.", "",
        "## Data", "", DESCRIPTIONS[cfg["dataset"]] + (
            "" if cfg["validation_fraction"] == 0 else f"; {cfg['validation_fraction']:.0%} of the training set "
            "held out as a validation split") + (
            "" if cfg["train_fraction"] == 1 else f"; trained on {cfg['train_fraction']:.0%} of the training set") + ".",
        "",
    ]
    held_out = "the validation split" if cfg["eval_split"] == "validation" else "the test set"
    sampling = quality_settings(cfg, run.denoiser.path.T)
    lines += ["## Metrics", ""]
    if metrics is not None:
        lines += [f"On {held_out}, of the EMA weights:", "",
                  md_table(["metric", "what it measures", "value"], _metric_rows(metrics, CARD_TEST_METRICS)), ""]
    if quality is not None:
        floor = quality.get("fd_floor")
        lines += [f"Sample quality, of samples drawn with {sampling['sampler']}, {sampling['steps']} steps, eta "
                  f"{fmt(sampling['eta'])}, guidance {fmt(sampling['guidance'])}, judged by the reference classifier "
                  f"against {held_out}. The FD-1D floor, {fmt(floor)}, is the FD-1D of as many real training "
                  f"signals: a model cannot be expected to do better.", "",
                  md_table(["metric", "what it measures", "value"], _metric_rows(quality, CARD_QUALITY_METRICS)), ""]
    else:
        lines += ["Sample quality was not measured for this run (`pydiffusion quality --run RUN --classifier FILE` "
                  "measures it before an export).", ""]
    lines += ["## Samples", "", f"![samples of each class]({figure})", "",
              f"Samples of each class ({figure_settings['sampler']}, {figure_settings['steps']} steps, guidance "
              f"{fmt(figure_settings['guidance'])}, seed 0), each row led by a real test sample of its class where the "
              f"data set was at hand.", ""]
    lines += ["## Training", ""]
    if run.command is not None:
        lines += ["The command that trained it:", "", "```", run.command, "```", ""]
    lines += [f"To train it again: `pydiffusion train --config {EXPORT_CONFIG} --out run` (on the CPU the same seed "
              f"gives the same numbers). Its configuration:", "",
              md_table(["key", "value"], [[f"`{k}`", f"`{v}`"] for k, v in cfg.items()]), "",
              "## License and citation", "", f"The weights and the code are under the {LICENSE} license. Cite:", "",
              "```bibtex", CITATION % VERSION, "```", ""]
    return "\n".join(lines)


def export_run(run_dir, out, samples_per_class: int = SAMPLES_PER_CLASS) -> Path:
    """Export the trained run in `run_dir` into the folder `out` (the files of this module's docstring); with W&B
    tracking on, the export is also logged to the run's W&B run as a model artifact. Returns out."""
    out = check_export_folder(out)
    run = load_run(run_dir)
    if run.exported:
        raise ConfigError(f"--run {run_dir} is an export already; copy the folder instead")
    if run.metrics is None:
        raise ConfigError(f"--run {run_dir} has not finished training (no {METRICS_FILE}); finish it with "
                          f"`pydiffusion train --out {run_dir}` first")
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().clone().contiguous() for k, v in run.denoiser.model.state_dict().items()}
    save_bytes(safetensors_bytes(weights, metadata={"format": "pt", "pydiffusion": VERSION}), out / EXPORT_WEIGHTS)
    save_json(run.config, out / EXPORT_CONFIG)
    save_json(run.history, out / EXPORT_HISTORY)
    save_json(run.metrics, out / METRICS_FILE)
    if run.quality is not None:
        save_json(run.quality, out / QUALITY_FILE)
    settings = _samples_figure(run, out / SAMPLES_FIGURE, samples_per_class)
    save_text(model_card(run, count_parameters(run.denoiser.model), SAMPLES_FIGURE, settings), out / CARD)
    tracker = resume_tracker(run.config, run_dir)
    if tracker is not None:
        try:
            cfg = run.config
            tracker.log_model(out, f"model-{cfg['loss']}-{cfg['noise']}-{cfg['training']}-seed{cfg['seed']}",
                              f"the EMA weights of {run_dir}, with its model card", run.metrics)
        finally:
            tracker.finish()
    return out


def _samples_figure(run: Run, path: Path, per_class: int) -> dict:
    """samples.png of the run: guided samples of each class (guidance 1 where the run's is 0), each class led by a
    real test sample where the data set is here. Returns the settings they were drawn with."""
    cfg = run.config
    settings = run.sample_settings()
    settings["guidance"] = settings["guidance"] or 1.0
    x, y = run.sample(NUM_CLASSES * per_class, **settings)
    real = held_out_if_present(cfg["dataset"], cfg["data_dir"], cfg["data_cache"])
    samples_grid(x, y, path, per_class=per_class, real=real,
                 title=f"{settings['sampler']}, {settings['steps']} steps, guidance {fmt(settings['guidance'])}")
    return settings
