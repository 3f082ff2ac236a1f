"""scripts/gpu-check.sh up to the GPU itself: without one it stops in one line before building anything; every
step's command exists and takes the options the script gives it; bench/gpu.py writes the JSON the README describes
(its training and grid-job rows measured here on the CPU, one epoch each: no GPU number is made up)."""
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: scripts/gpu-check.sh runs for real")


def load_bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_stops_in_one_line_before_any_work(tmp_path):
    before = sorted((ROOT / "bench" / "results").glob("gpu-*.json"))
    r = subprocess.run([str(SCRIPT)], capture_output=True, text=True, env={"PATH": f"{Path(sys.executable).parent}:"
                                                                                  "/usr/bin:/bin",
                                                                          "PYTHON": sys.executable}, timeout=120)
    assert r.returncode == 3 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and "no CUDA GPU here" in r.stderr and "nothing was built or measured" in r.stderr
    assert sorted((ROOT / "bench" / "results").glob("gpu-*.json")) == before
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--kernels", str(tmp_path / "k.json")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "no CUDA GPU here" in r.stderr


def script_commands():
    """The python commands of the script's steps, as argument lists (the script's variables left as they are)."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    return [shlex.split(line.strip())[1:] for line in text.splitlines() if line.strip().startswith('"$python" ')]


def test_every_step_names_files_that_exist_and_options_its_tools_take():
    commands = script_commands()
    files = [arg for cmd in commands for arg in cmd if re.fullmatch(r"(tests|bench)/[\w/]+\.py", arg)]
    assert {"tests/system/test_kernels_cuda.py", "tests/unit/test_kernels.py", "tests/unit/test_block_kernel.py",
            "bench/kernels.py", "bench/gpu.py"} <= set(files)
    assert all((ROOT / f).exists() for f in files), [f for f in files if not (ROOT / f).exists()]
    kernels = next(cmd for cmd in commands if cmd[0] == "bench/kernels.py")
    # with no GPU, --devices cuda measures nothing: what is checked here is that the options parse
    r = subprocess.run([sys.executable, str(ROOT / kernels[0]), *kernels[1:-2], "--repeats", "1"], capture_output=True,
                       text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "setup.py" in (ROOT / "scripts" / "gpu-check.sh").read_text() and (ROOT / "setup.py").exists()


def test_the_json_is_what_the_readme_describes(tmp_path):
    gpu = load_bench_gpu()
    result = gpu.measure({"rows": []}, epochs=1, grid={"epochs": 1}, device="cpu", grid_modes=("eager",))
    assert set(result) == set(gpu.SCHEMA) and all(isinstance(result[k], t) for k, t in gpu.SCHEMA.items())
    assert [r["precision"] for r in result["training"]["rows"]] == ["float32", "bf16"]
    for row in result["training"]["rows"]:
        assert set(row) == {"precision", *gpu.TRAINING_KEYS} and row["epochs"] == 1 and row["ex_per_s"] > 0
    [job] = result["grid_job"]["rows"]
    assert set(job) == set(gpu.GRID_JOB_KEYS) and job["mode"] == "eager" and job["wall_s"] > 0
    section = (ROOT / "README.md").read_text().split("### GPU check")[1].split("\n## ")[0]
    for key in [*gpu.SCHEMA, *gpu.TRAINING_KEYS, *gpu.GRID_JOB_KEYS]:
        assert f"`{key}`" in section, f"the README's GPU check section does not describe {key}"
    assert gpu.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
