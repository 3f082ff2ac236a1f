"""Running snakemake on this repository from tests."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def snakemake(*args, timeout=900):
    """Run this interpreter's snakemake in the repository root, as the README does (no venv on PATH)."""
    env = {**os.environ, "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                  if Path(p) != Path(sys.executable).parent)}
    return subprocess.run([str(Path(sys.executable).parent / "snakemake"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict:
    """The 'Job stats' table of a snakemake plan as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
