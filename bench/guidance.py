"""Classifier-free against classifier guidance on one trained run: the report's guidance comparison alone.

    python bench/guidance.py RUN_DIR --classifier FILE [--noisy-classifier FILE] [--n 1000] [--threads 1] --out-dir DIR

Writes DIR/guidance.json (the rows, the run, the machine), DIR/figures/guidance.png and DIR/guidance.md (the
report's section). Without --noisy-classifier (or when the file is missing) the noise-aware classifier of
the run's path is trained first (about 20 s) and saved there (default DIR/noisy_classifier.pt).
"""
import argparse
import platform
import time
from pathlib import Path

import torch

from pydiffusion.checkpoints import load_denoiser
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.evaluation.quality import compare_guidance
from pydiffusion.files import save_json, save_text
from pydiffusion.nets.classifiers import load_classifier
from pydiffusion.nets.noisy_classifier import load_noisy_classifier, save_noisy_classifier, train_noisy_classifier
from pydiffusion.reporting.figures import guidance_plot
from pydiffusion.reporting.report import guidance_section


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained run directory")
    p.add_argument("--classifier", required=True, help="the reference classifier (pydiffusion classifier)")
    p.add_argument("--noisy-classifier", help="the noise-aware classifier of the run's path (trained if missing)")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    denoiser, cfg = load_denoiser(args.run)
    torch.set_num_threads(args.threads)
    data = load_mnist1d(cfg.get("data_cache"))
    noisy_file = Path(args.noisy_classifier or out / "noisy_classifier.pt")
    if not noisy_file.exists():
        t0 = time.perf_counter()
        noisy, acc = train_noisy_classifier(*data, denoiser.path, log=lambda s: None)
        save_noisy_classifier(noisy, denoiser.path, acc, noisy_file)
        print(f"trained the noisy classifier of {denoiser.path} in {time.perf_counter() - t0:.0f} s: test accuracy {acc}")
    noisy = load_noisy_classifier(noisy_file, denoiser.path)
    rows = compare_guidance(denoiser, cfg, load_classifier(args.classifier)[0], noisy, data, n=args.n, log=print)
    save_json({"run": str(args.run), "machine": {"host": platform.node(), "torch": torch.__version__,
                                                 "threads": args.threads}, "n": args.n, "guidance": rows},
              out / "guidance.json")
    guidance_plot(rows, out / "figures" / "guidance.png")
    save_text("\n".join(guidance_section(rows)), out / "guidance.md")
    print(f"wrote {out / 'guidance.json'}, {out / 'guidance.md'} and {out / 'figures' / 'guidance.png'}")


if __name__ == "__main__":
    main()
