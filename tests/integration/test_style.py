"""The repository's own checks, as CI runs them: ruff, snakefmt and snakemake --lint come back clean."""
import subprocess
import sys
from pathlib import Path

from helpers.workflow import ROOT, snakemake

BIN = Path(sys.executable).parent


def test_ruff_finds_nothing():
    r = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakefmt_would_change_nothing():
    r = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_snakemake_lint_is_clean():
    r = snakemake("--lint")
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr, r.stderr


def test_package_files_are_there():
    for name in ("LICENSE", "CITATION.cff", "CHANGELOG.md", ".pre-commit-config.yaml", "pydiffusion/py.typed",
                 "config/README.md", "profiles/default/config.yaml"):
        assert (ROOT / name).is_file(), name
    assert "MIT License" in (ROOT / "LICENSE").read_text()
