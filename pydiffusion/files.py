"""Files: atomic writes (a crash never leaves a half-written output behind), loads that refuse
code and name the broken file, and a lock so that one run directory has one writer."""
import errno
import fcntl
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

logger = logging.getLogger(__name__)


class UnreadableFileError(ValueError):
    """A file is broken or not what it should be: the message names it and what to do."""


class UnsafeFileError(UnreadableFileError):
    """A torch file holds objects that loading would have to execute: refused, never unpickled."""


class WriteError(OSError):
    """An output could not be written (no permission, a read-only or full disk); nothing was left half-written."""


# errno -> what to do about it, for WriteError
WRITE_FAILURES = {errno.EACCES: "no permission to write there (choose a folder you can write)",
                  errno.EPERM: "no permission to write there (choose a folder you can write)",
                  errno.EROFS: "the file system is read-only (choose a writable folder)",
                  errno.ENOSPC: "no space left on the device (free some space)",
                  errno.EDQUOT: "the disk quota is exceeded (free some space)"}


class RunLockedError(RuntimeError):
    """Another process holds the run directory."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_folder(folder):
    """Make the renames in `folder` durable: without it a crash of the machine can undo them."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename(src, dst):
    """os.replace, durable (the folder fsynced after it)."""
    os.replace(src, dst)
    fsync_folder(Path(dst).parent)


def _atomic(path, write):
    """Write through a temporary file in the same folder, then rename it over `path` (durably). A folder that cannot
    be written, or a full disk, is a WriteError naming the file; `path` then holds what it held before."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        rename(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in WRITE_FAILURES:
            raise WriteError(f"cannot write {path}: {WRITE_FAILURES[e.errno]}; {path.name} keeps what it held before "
                             f"(rerun the same command once that is fixed)") from None
        raise


def check_writable(path, what: str):
    """Raise WriteError now, before any work, if `path` (a file or folder to be written) could not be: a file is
    tried in the nearest folder of it that exists."""
    path = Path(path)
    folder = next(p for p in (path, *path.parents) if p.exists())
    if not folder.is_dir():
        return  # "is under a file": the callers' own checks say that in their words
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".pydiffusion-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = WRITE_FAILURES.get(e.errno, e.strerror)
        raise WriteError(f"{what} {path} cannot be written: {why}") from None


def remove_stale_temporaries(folder) -> list:
    """Delete the temporary files of writes that a killed process left in `folder` (call it only
    while holding the folder's lock: another writer's temporaries are not stale)."""
    stale = [p for p in Path(folder).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def save_torch(obj, path):
    _atomic(path, lambda f: torch.save(obj, f))


def save_npy(array, path):
    _atomic(path, lambda f: np.save(f, array))


def save_json(obj, path):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def save_bytes(data: bytes, path):
    _atomic(path, lambda f: f.write(data))


def save_text(text: str, path):
    _atomic(path, lambda f: f.write(text.encode()))


def save_figure(fig, path, dpi=110):
    """A matplotlib figure as PNG (or by the path's suffix), written atomically."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    _atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight"))


def load_torch(path, what: str, fix: str):
    """A torch file of tensors and plain containers, never unpickling code (weights_only=True).
    Anything else (code, a truncated or foreign file) is an UnreadableFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by the kind of damage
        if "Weights only load failed" in str(e) and "GLOBAL" in str(e):  # a class or function to import and call
            raise UnsafeFileError(f"{what} {path} holds objects other than tensors and plain containers (refused: "
                                  f"loading them could run code); {fix}") from None
        if path.stat().st_size == 0:
            why = "is empty"
        else:
            why = f"is truncated or not a torch file ({type(e).__name__})"
        raise UnreadableFileError(f"{what} {path} {why}; {fix}") from None


def build_and_load(build, state_dict, what: str, fix: str):
    """build() -> a module, with the weights `state_dict` of a file loaded into it, strictly. An architecture the code
    does not build, weights that do not fit it and non-finite weights are each an UnreadableFileError: `what` names
    the file, `fix` says what to do."""
    try:
        model = build()
    except (TypeError, ValueError) as e:  # an unknown or bad architecture key
        raise UnreadableFileError(f"{what}: its architecture is not one this code builds ({' '.join(str(e).split())}); "
                                  f"{fix}") from None
    if not isinstance(state_dict, dict):
        raise UnreadableFileError(f"{what} holds no weights; {fix}")
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as e:  # missing or unexpected keys, wrong shapes, not tensors
        raise UnreadableFileError(f"{what}: its weights do not fit its architecture ({' '.join(str(e).split())[:200]}); "
                                  f"{fix}") from None
    bad = next((k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UnreadableFileError(f"{what} holds non-finite weights (NaN or inf in {bad}); {fix}")
    return model


def load_json(path, what: str, fix: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {fix}")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise UnreadableFileError(f"{what} {path} is not valid JSON ({str(e).splitlines()[0]}); {fix}") from None


class RunLock:
    """An exclusive lock on a run directory (flock on DIR/.lock; the kernel drops it when the
    holder dies, also by kill -9). `wait=False` raises RunLockedError at once when it is held;
    `wait=True` waits, logging once, for the holder to finish."""

    def __init__(self, folder, wait: bool = False, log=logger.info, poll_s: float = 1.0):
        self.file, self.wait, self.log, self.poll_s, self.fd = Path(folder) / ".lock", wait, log, poll_s, None

    def __enter__(self):
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                if not self.wait:
                    os.close(fd)
                    raise RunLockedError(f"{self.file.parent} is in use by another pydiffusion process (pid {holder}); "
                                         f"wait for it to finish or stop it, then rerun to resume") from None
                if not announced:
                    self.log(f"waiting for pid {holder}, which is still writing to {self.file.parent}")
                    announced = True
                time.sleep(self.poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing drops the flock
        self.fd = None
