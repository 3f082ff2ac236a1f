"""The Apptainer images (containers/).

Always: both definition files parse (containers/deffile.py, and spython for the docker one), their
scripts pass `sh -n`, and broken definitions are rejected.

Marked `container` (root, debootstrap, squashfs-tools, siftool, bubblewrap, and squashfuse if
present; about 3-6 minutes with the debootstrap base cached, 2-3 more without): the CPU image is built offline from a clean checkout of
HEAD with containers/build-sif.sh; siftool checks its objects and header; then, inside it as an
unprivileged user (nobody) with bubblewrap and no network, the image's %test section
(`pydiffusion doctor` and tests/unit/test_kernels.py) and one short training run whose outputs land on
a bind-mounted folder, and the same run with the host's venv gives the same numbers.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from helpers.timings import without_timings
from helpers.workflow import ROOT

CONTAINERS = ROOT / "containers"
sys.path.insert(0, str(CONTAINERS))
import deffile  # noqa: E402

APT_PACKAGES = "debootstrap squashfs-tools siftool bubblewrap"
TOOLS = ("debootstrap", "mksquashfs", "unsquashfs", "siftool", "bwrap", "setpriv", "git")
NOBODY = 65534
TINY = {"model": "unet", "channels": 8, "emb_dim": 32, "epochs": 2, "batch_size": 128, "threads": 1,
        "n_samples": 10, "training": "semi_implicit", "wandb_mode": "disabled", "seed": 0}


# --- the definition files (no root, no tools) ----------------------------------------------------

@pytest.mark.parametrize("name", ["cpu.def", "gpu.def"])
def test_definition_file_parses(name):
    d = deffile.Definition(CONTAINERS / name)
    missing = d.check(root=ROOT)
    for section in ("files", "post", "environment", "labels", "runscript", "test", "help"):
        assert d.body(section, substitute=False).strip(), f"%{section} is empty"
    assert "exec /opt/pydiffusion/venv/bin/pydiffusion \"$@\"" in d.body("runscript")
    assert "pydiffusion doctor" in d.body("test") and "tests/unit/test_kernels.py" in d.body("test")
    assert "containers/install.sh" in d.body("post")
    assert "{{ GIT_COMMIT }}" in "\n".join(d.sections["labels"])
    sources = [src for src, _ in d.files(substitute=False)]
    assert {"pyproject.toml", "setup.py", "pydiffusion", "csrc", "containers/install.sh"} <= set(sources)
    if name == "cpu.def":
        assert d.header["bootstrap"] == "debootstrap" and d.header["osversion"] == "bookworm"
        assert missing == ["DEBIAN_MIRROR"], "the mirror is the only build argument without a default"
        assert "PYDIFFUSION_PURGE_BUILD_DEPS=1" in d.body("post", substitute=False)
    else:
        assert d.header["bootstrap"] == "docker" and missing == []
        assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn9-devel", d.header["from"])
        post = d.body("post")
        assert "PYDIFFUSION_TORCH=system" in post and 'TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6;8.9;9.0"' in post


def test_gpu_definition_parses_with_spython():
    """spython reads docker-bootstrap definitions only (it raises on debootstrap ones)."""
    parsers = pytest.importorskip("spython.main.parse.parsers", reason="spython is not installed")
    recipe = parsers.SingularityParser(str(CONTAINERS / "gpu.def")).recipe
    layer = next(iter(recipe.values()))
    d = deffile.Definition(CONTAINERS / "gpu.def")
    assert layer.fromHeader == d.header["from"]
    assert layer.cmd == 'exec /opt/pydiffusion/venv/bin/pydiffusion "$@"'
    assert "PATH=/opt/pydiffusion/venv/bin:$PATH" in layer.environ
    assert any("install.sh" in line for line in layer.install)
    assert len(layer.files) == len(d.files(substitute=False))
    assert any(label.startswith("org.opencontainers.image.revision") for label in layer.labels)


@pytest.mark.parametrize("text, error", [
    ("%post\n    true\n", "no Bootstrap"),
    ("Bootstrap: docker\n%post\n    true\n", "needs From"),
    ("From: x\nBootstrap: docker\n", "Bootstrap must be the first"),
    ("Bootstrap: docker\nFrom: x\nOSVersion: 1\n", "not valid for Bootstrap: docker"),
    ("Bootstrap: docker\nFrom: x\n%postt\n    true\n", "unknown section %postt"),
    ("Bootstrap: docker\nFrom: x\n%runscript\n    exec x\n%post\n    if true; then\n        echo\n", "%post: shell syntax error"),
    ("Bootstrap: docker\nFrom: x\n%runscript\n    exec x\n%labels\n    lonely\n", "%labels line"),
    ("Bootstrap: docker\nFrom: x\n%post\n    true\n", "no %runscript"),
    ("Bootstrap: docker\nFrom: x\n%runscript\n    exec x\n%files\n    not-here /x\n", "%files source"),
])
def test_definition_errors_are_caught(tmp_path, text, error):
    path = tmp_path / "bad.def"
    path.write_text(text)
    with pytest.raises(deffile.DefError, match=re.escape(error)):
        deffile.Definition(path).check(root=tmp_path)


def test_build_argument_without_value_is_an_error(tmp_path):
    path = tmp_path / "a.def"
    path.write_text("Bootstrap: debootstrap\nOSVersion: bookworm\nMirrorURL: {{ M }}\n%runscript\n    exec x\n")
    with pytest.raises(deffile.DefError, match="build argument M has no value"):
        deffile.Definition(path).rendered_header()
    assert deffile.Definition(path, {"M": "http://m/debian"}).rendered_header()["mirrorurl"] == "http://m/debian"


def test_scripts_have_valid_shell_syntax():
    subprocess.run(["sh", "-n", str(CONTAINERS / "install.sh")], check=True)
    for script in ("build-sif.sh", "run-sif.sh"):
        subprocess.run(["bash", "-n", str(CONTAINERS / script)], check=True)
        assert os.access(CONTAINERS / script, os.X_OK), f"{script} is not executable"


# --- the CPU image, built offline and run unprivileged ------------------------------------------

def _unavailable():
    if os.geteuid() != 0:
        return "needs root (debootstrap, and root inside the image root file system for %post)"
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install {APT_PACKAGES} (make system-deps)"
    if not (ROOT / ".git").exists():
        return "not a git checkout (the image is built from a clean clone of HEAD)"
    probe = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--",
                            "bwrap", "--ro-bind", "/", "/", "--unshare-net", "true"], capture_output=True, text=True)
    if probe.returncode:
        return f"bubblewrap cannot make user namespaces as an unprivileged user here: {probe.stderr.strip()}"
    return None


def _run(cmd, timeout, **kw):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    r.seconds = time.perf_counter() - t0
    return r


@pytest.fixture(scope="module")
def image():
    """Builds the CPU image once for this module: a clean clone of HEAD, then build-sif.sh."""
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    # a folder every user can traverse (pytest's own tmp folders are private to root), so that
    # the unprivileged user inside the sandbox can reach the bind-mounted folders
    top = Path(tempfile.mkdtemp(prefix="pydiffusion-container-"))
    top.chmod(0o755)
    try:
        src = top / "src"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(src)], check=True)
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
        sif = top / "pydiffusion-cpu.sif"
        # --notest: the %test section runs below as an unprivileged user, as `apptainer test` would
        r = _run([str(src / "containers" / "build-sif.sh"), "--src", str(src), "--notest", str(sif)], timeout=1800)
        (top / "build.log").write_text(r.stdout + r.stderr)
        assert r.returncode == 0, f"build-sif.sh failed after {r.seconds:.0f} s:\n{(r.stdout + r.stderr)[-6000:]}"
        print(f"\nbuilt {sif.name} ({sif.stat().st_size / 2**20:.0f} MiB) from {commit[:12]} in {r.seconds:.0f} s")
        yield SimpleNamespace(sif=sif, top=top, commit=commit, build_s=r.seconds, src=src)
    finally:
        # an unpacked image (where squashfuse is missing) is ~50k files: rm is faster than rmtree
        subprocess.run(["rm", "-rf", str(top)], check=False)


def _in_image(image, *args, binds=(), env=(), timeout=900):
    cmd = [str(CONTAINERS / "run-sif.sh"), "--unpack-dir", str(image.top / "unpacked")]
    for b in binds:
        cmd += ["--bind", b]
    for e in env:
        cmd += ["--env", e]
    return _run(cmd + list(args), timeout=timeout)


def _siftool(*args):
    return subprocess.run(["siftool", *args], check=True, capture_output=True, text=True).stdout


@pytest.mark.container
def test_sif_objects_header_and_metadata(image):
    listing = _siftool("list", str(image.sif))
    rows = [line.split("|") for line in listing.splitlines() if re.match(r"^\d+\s*\|", line)]
    assert [(r[0].strip(), r[1].strip(), r[-1].strip()) for r in rows] == [
        ("1", "1", "Def.FILE"), ("2", "1", "JSON.Generic"), ("3", "1", "FS (Squashfs/*System/amd64)")], listing
    header = _siftool("header", str(image.sif))
    assert re.search(r"^Launch Script:\s+#!/usr/bin/env run-singularity$", header, re.M), header
    assert re.search(r"^Primary Architecture:\s+amd64$", header, re.M), header
    assert image.sif.read_bytes()[:32] == b"#!/usr/bin/env run-singularity\n\0"
    info = _siftool("info", "3", str(image.sif))
    assert re.search(r"Filesystem Type:\s+Squashfs", info) and re.search(r"Partition Type:\s+\*System", info)
    assert re.search(r"Architecture:\s+amd64", info), info

    definition = _siftool("dump", "1", str(image.sif))
    assert "Bootstrap: debootstrap" in definition and f"org.opencontainers.image.revision {image.commit}" in definition
    assert "{{" not in definition, "build arguments are substituted in the stored definition"
    labels = json.loads(_siftool("dump", "2", str(image.sif)))
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert labels["org.opencontainers.image.revision"] == image.commit
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.label-schema.usage.singularity.deffile.bootstrap"] == "debootstrap"

    # the root file system has what Apptainer writes into an image
    offset = int(re.search(r"Offset:\s+(\d+)", info).group(1))
    files = subprocess.run(["unsquashfs", "-o", str(offset), "-l", "-d", "", str(image.sif)], check=True,
                           capture_output=True, text=True).stdout.split()
    for path in ("/.singularity.d/actions/exec", "/.singularity.d/actions/run", "/.singularity.d/actions/shell",
                 "/.singularity.d/actions/test", "/.singularity.d/env/90-environment.sh",
                 "/.singularity.d/env/99-base.sh", "/.singularity.d/runscript", "/.singularity.d/test",
                 "/.singularity.d/labels.json", "/.singularity.d/Singularity", "/.singularity.d/libs",
                 "/singularity", "/.exec", "/opt/pydiffusion/venv/bin/pydiffusion", "/usr/local/bin/pydiffusion"):
        assert path in files, f"{path} missing from the image"
    assert not [f for f in files if re.search(r"/pydiffusion/diffusion/_C[^/]*\.so$", f) and "site-packages" not in f], \
        "the extension is imported from site-packages only"
    assert [f for f in files if re.search(r"site-packages/pydiffusion/diffusion/_C[^/]*\.so$", f)], "pydiffusion.diffusion._C is built"
    assert "/usr/bin/g++" not in files, "the compiler is removed after the build"
    assert not [f for f in files if f.startswith("/opt/wheels") or f.startswith("/opt/pypi")], \
        "the build host's package folders are not in the image"


@pytest.mark.container
def test_test_section_runs_unprivileged_without_network(image):
    """`apptainer test`: pydiffusion doctor and the kernel equivalence tests, inside the image."""
    who = _in_image(image, "exec", str(image.sif), "sh", "-c",
                    "id -u; touch /opt/x 2>/dev/null && echo writable || echo read-only; "
                    "python -c 'import socket; socket.create_connection((\"127.0.0.1\", 9), 1)' 2>&1 | tail -1; "
                    "python -c 'import socket; print(*sorted(n for _, n in socket.if_nameindex()))'")
    assert who.returncode == 0, who.stderr
    lines = who.stdout.split("\n")
    assert lines[0] == str(NOBODY) and lines[1] == "read-only", who.stdout
    assert "Connection refused" in lines[2] or "unreachable" in lines[2], who.stdout
    assert lines[3] == "lo", f"no network interface but loopback: {lines[3]!r}"

    r = _in_image(image, "test", str(image.sif))
    out = r.stdout + r.stderr
    print(out[-1500:])
    assert r.returncode == 0, out[-6000:]
    for part in ("imports", "ops backend", "W&B", "data", "CUDA"):
        assert f"ok    {part}:" in out, out
    assert "ok    ops backend: cpp" in out, "the compiled kernels serve the CPU inside the image"
    if (image.src / "tests" / "test_kernels.py").exists():
        summary = re.search(r"^=*\s*(\d+) passed[^\n]* in [\d.]+s", out, re.M)
        assert summary and int(summary.group(1)) > 0, out[-3000:]
        assert not re.search(r"\d+ (failed|errors?)\b", summary.group(0)), summary.group(0)
        # the image has neither a C++ compiler (removed after the build) nor nvcc: exactly the inductor
        # case and the nvcc compile check may skip, nothing else
        skipped = re.findall(r"^SKIPPED \[\d+\] (.*)$", out, re.M)
        unexpected = [s for s in skipped if "needs a C++ compiler" not in s and "nvcc is not installed" not in s]
        assert not unexpected, unexpected


@pytest.mark.container
def test_training_in_image_matches_host(image, tmp_path):
    """One short training run inside the image (outputs on a bind-mounted folder), and the same
    run in the host's venv: the same data, history and metrics, bit for bit (same torch wheel,
    one thread, the same seeds; only the wall-clock and CPU times differ)."""
    work = image.top / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)  # the unprivileged user writes here
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    r = _in_image(image, "exec", str(image.sif), "pydiffusion", "train", "--config", "/work/tiny.yaml",
                  "--out", "/work/run", binds=[f"{work}:/work"], env=["PYDIFFUSION_CACHE=/work/cache"])
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    inside = work / "run"
    for name in ("config.yaml", "history.json", "checkpoint.pt", "metrics.json"):
        assert (inside / name).exists(), name
        assert (inside / name).stat().st_uid == NOBODY, f"{name} is written by the unprivileged user"
    print(f"\ntraining inside the image: {r.seconds:.1f} s")

    host_cache = tmp_path / "cache"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    h = _run([sys.executable, "-m", "pydiffusion.cli.main", "train", "--config", str(cfg), "--out", str(tmp_path / "run")],
             timeout=900, env={**os.environ, "PYDIFFUSION_CACHE": str(host_cache)})
    assert h.returncode == 0, h.stderr[-4000:]

    # the data the image generated offline is the host's
    (img_data,), (host_data,) = sorted((work / "cache").glob("mnist1d-*.pt")), sorted(host_cache.glob("mnist1d-*.pt"))
    assert img_data.name == host_data.name
    a, b = torch.load(img_data), torch.load(host_data)
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key

    def strip_times(x):  # metrics.json is a dict, history.json a list of them
        return [without_timings(v) for v in x] if isinstance(x, list) else without_timings(x)

    for name in ("metrics.json", "history.json"):
        got = strip_times(json.loads((inside / name).read_text()))
        want = strip_times(json.loads((tmp_path / "run" / name).read_text()))
        assert got == want, f"{name} differs between the image and the host"
    metrics = json.loads((inside / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["seed"] == 0 and metrics["test_mse"] > 0
    sa = torch.load(inside / "checkpoint.pt", map_location="cpu", weights_only=True)
    sb = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    for key in ("model", "ema"):
        if key in sa:
            for name, value in sa[key].items():
                assert torch.equal(value, sb[key][name]), f"{key}.{name}"
