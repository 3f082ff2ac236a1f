"""Samplers compared on one trained run: quality and time per 1,000 samples.

DDPM with all T steps; DDIM with 5, 10 and 20 steps (eta 0); DPM-Solver++(2M) with 5, 10 and
20 steps; classifier-free guidance 0 (unconditional), 1 and 3 (DDIM at the run's sample_steps).
Every row starts from the same noise; quality is the reference classifier's accuracy on the
guided samples (judged as the label they were drawn for), FD-1D against the test set beside its
floor (n training signals against the test set) and the coverage entropy of predicted classes.
Prints a table and writes the rows with the machine's description to
bench/results/samplers-<run>-<device>-<host>.json (or --out).

    python bench/samplers.py RUN_DIR [--classifier FILE] [--n 1000] [--threads 1] [--out FILE]

Without --classifier (or when the file is missing) the reference classifier is trained first and
cached at results/classifier.pt (the workflow's location) or the given path.
"""
import argparse
import platform
import time
from pathlib import Path

import torch

from pydiffusion.checkpoints import load_denoiser
from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.denoiser import Denoiser
from pydiffusion.evaluation.quality import compare_samplers
from pydiffusion.files import save_json
from pydiffusion.nets.classifiers import load_classifier, save_classifier, train_classifier


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def table(rows):
    head = f"{'sampler':9s} {'steps':>5s} {'guid':>4s} {'NFE':>4s} {'acc':>6s} {'FD-1D':>7s} {'floor':>6s} " \
           f"{'ratio':>6s} {'cover':>6s} {'s/1000':>7s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(f"{r['sampler']:9s} {r['steps']:5d} {r['guidance']:4g} {r['evaluations']:4d} {acc:>6s} "
                     f"{r['fd_1d']:7.3f} {r['fd_floor']:6.3f} {r['fd_ratio']:6.2f} {r['coverage_entropy']:6.3f} "
                     f"{r['seconds_per_1000']:7.2f}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained run directory (checkpoint.pt, config.yaml)")
    p.add_argument("--classifier", default="results/classifier.pt", help="reference classifier (trained if missing)")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="where the network runs (cpu or cuda)")
    p.add_argument("--out", help="JSON file (default bench/results/samplers-<run>-<device>-<host>.json)")
    args = p.parse_args(argv)
    denoiser, cfg = load_denoiser(args.run)
    path = denoiser.path
    torch.set_num_threads(args.threads)  # after load_denoiser, which applies the run's own thread count
    data = load_mnist1d(cfg.get("data_cache"))
    cls_path = Path(args.classifier)
    if cls_path.exists():
        classifier, cls_acc = load_classifier(cls_path)
    else:
        t0 = time.perf_counter()
        classifier, cls_acc = train_classifier(*data, log=lambda s: None)
        save_classifier(classifier, cls_acc, cls_path)
        print(f"trained the reference classifier in {time.perf_counter() - t0:.0f} s; wrote {cls_path}")
    print(f"reference classifier: test accuracy {cls_acc:.4f} ({cls_path})")

    model = denoiser.model.to(args.device)
    if args.device != "cpu":  # samples come back to the CPU for the classifier
        def device_model(x, t, z, y):
            return model(x.to(args.device), t.to(args.device), z.to(args.device), y.to(args.device)).cpu()
        denoiser = Denoiser.from_config(device_model, path, cfg)
    rows = compare_samplers(denoiser, cfg, classifier, data, n=args.n, seed=args.seed, log=lambda s: None)
    print(f"run {args.run}: {cfg['loss']} {cfg['noise']} {cfg['training']}, T = {path.T}, "
          f"prediction {cfg['prediction']}, n = {args.n}, {args.threads} thread(s), {args.device}")
    print(table(rows))

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name()
    result = {"machine": {"device": device, "host": platform.node(), "torch": torch.__version__,
                          "threads": args.threads, "ops_backend": ops.backend("cpu")},
              "run": str(args.run), "config": {k: cfg[k] for k in ("loss", "noise", "training", "T", "prediction",
                                                                  "clip", "sample_steps", "seed")},
              "classifier": {"path": str(cls_path), "test_acc": cls_acc}, "n": args.n, "rows": rows}
    name = Path(args.run).name if not Path(args.run).name.startswith("seed") else \
        f"{Path(args.run).parent.name}-{Path(args.run).name}"
    out = Path(args.out) if args.out else \
        Path(__file__).parent / "results" / f"samplers-{name}-{args.device.split(':')[0]}-{platform.node()}.json"
    save_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
