"""The aggregate job run as the workflow runs it: its progress goes to its log file."""
import json
import subprocess
import sys

import torch
from helpers.runs import made_up_run
from helpers.workflow import ROOT

from pydiffusion.diffusion.paths import NoisePath
from pydiffusion.evaluation.quality import GUIDANCE_SCALES
from pydiffusion.nets.classifiers import Classifier, save_classifier
from pydiffusion.nets.noisy_classifier import NoisyClassifier, save_noisy_classifier


def test_the_aggregate_job_writes_its_progress_to_its_log_file(tmp_path, data_cache):
    run = made_up_run(tmp_path / "runs", "implicit", 0, model=True)
    torch.manual_seed(0)
    save_classifier(Classifier(width=8, features=8).eval(), 0.1, tmp_path / "classifier.pt")
    noisy = tmp_path / "noisy_classifiers" / "gaussian.pt"  # the made-up runs' path: gaussian, T = 20
    save_noisy_classifier(NoisyClassifier(20, width=8, emb_dim=16).eval(), NoisePath("gaussian", 20), {0: 0.1}, noisy)
    log = tmp_path / "logs" / "aggregate.log"
    log.parent.mkdir()
    job = {"log": [str(log)], "params": {"runs": [str(run)], "results": str(tmp_path / "out"), "n": 30},
           "input": {"classifier": [str(tmp_path / "classifier.pt")], "data": [str(data_cache)],
                     "noisy_classifiers": [str(noisy)]}, "threads": 1}
    # what Snakemake's `script:` does: run the script in a fresh Python with a `snakemake` object defined
    driver = ("import json, runpy, sys, types\n"
              "job = json.loads(sys.argv[1])\n"
              "snakemake = types.SimpleNamespace(log=job['log'], threads=job['threads'],\n"
              "    params=types.SimpleNamespace(**job['params']), input=types.SimpleNamespace(**job['input']))\n"
              "runpy.run_path(sys.argv[2], init_globals={'snakemake': snakemake}, run_name='__main__')\n")
    r = subprocess.run([sys.executable, "-c", driver, json.dumps(job), str(ROOT / "workflow" / "scripts" / "aggregate.py")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr + log.read_text()
    assert "FD-1D" not in r.stdout + r.stderr, "progress goes to the log file, not to the job's output"
    lines = log.read_text().splitlines()
    assert any(line.startswith("ddim steps=5 guidance=1.0: FD-1D") for line in lines), lines
    assert any(line.startswith("comparing samplers on") for line in lines), lines
    assert any(line.startswith("classifier guidance 16.0: accuracy") for line in lines), lines
    guidance = json.loads((tmp_path / "out" / "guidance.json").read_text())["guidance"]
    assert [(r["guidance"], r["scale"]) for r in guidance] == [
        (kind, scale) for kind, scales in GUIDANCE_SCALES.items() for scale in scales]
    assert (tmp_path / "out" / "figures" / "guidance.png").stat().st_size > 5_000
    assert "## Guidance on the best configuration" in (tmp_path / "out" / "report.md").read_text()
    assert lines[-1] == f"wrote {tmp_path / 'out' / 'report.md'}, summary.json, summary.csv and figures/"
    assert (tmp_path / "out" / "figures" / "best_per_class.png").exists()
