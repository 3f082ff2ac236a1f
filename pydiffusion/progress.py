"""Progress of a running grid: jobs done of all, and an estimate of the time left.

Snakemake prints "N of M steps done"; a grid's time is almost all training, so this counts the
training work done instead: the epochs in each run's history.json, weighted by the network passes
per example of its training mode (a semi-implicit epoch costs four implicit ones). The time left is
the work left at the rate the work was done over about the last `RATE_WINDOW_S` seconds, so it follows
however many jobs run at once, here or on a cluster, and recovers from a pause (a suspended workflow,
a laptop asleep) within that window, where a rate since the start would carry the pause to the end.
Epochs done before the start (a resumed grid) count as done but not towards the rate.
"""
import json
import threading
import time
from collections import deque
from pathlib import Path

DONE_FILE = "samples.pt"  # the last output a grid job writes
RATE_WINDOW_S = 1800


def epochs_done(run_dir: Path) -> int:
    """Epochs in a run's history.json; 0 where there is none yet (or it is being replaced)."""
    try:
        return len(json.loads((Path(run_dir) / "history.json").read_text()))
    except (OSError, ValueError):
        return 0


def format_duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class GridProgress:
    """`runs`: {run directory: cost of one epoch}; `epochs`: every run's epochs, or {run directory: its epochs}
    (the ablation study's runs differ in length)."""

    def __init__(self, runs: dict, epochs, clock=time.monotonic):
        self.runs, self.clock = {Path(r): c for r, c in runs.items()}, clock
        self.epochs = {Path(r): epochs[r] if isinstance(epochs, dict) else epochs for r in runs}
        self.total = sum(cost * self.epochs[run] for run, cost in self.runs.items())
        self.start_time = clock()
        self.seen = deque([(self.start_time, self.work_done())])  # (time, work) at each line(), for the rate

    def work_done(self) -> float:
        return sum(cost * min(epochs_done(run), self.epochs[run]) for run, cost in self.runs.items())

    def jobs_done(self) -> int:
        return sum((run / DONE_FILE).exists() for run in self.runs)

    def line(self) -> str:
        """'7/24 grid jobs done, 41% of the training; about 5 min 10 s left (3 min 02 s so far)'"""
        now, work = self.clock(), self.work_done()
        while len(self.seen) > 1 and now - self.seen[1][0] >= RATE_WINDOW_S:
            self.seen.popleft()  # keep one reading at least the window old: the rate spans the whole window
        then, work_then = self.seen[0]
        self.seen.append((now, work))
        text = f"{self.jobs_done()}/{len(self.runs)} grid jobs done, {100 * work / self.total:.0f}% of the training"
        if work > work_then and work < self.total:
            left = (self.total - work) * (now - then) / (work - work_then)
            text += f"; about {format_duration(left)} left"
        return f"{text} ({format_duration(now - self.start_time)} so far)"

    def report_every(self, seconds: float, log) -> threading.Event:
        """Log `line()` every `seconds` in a daemon thread until the returned event is set."""
        stop = threading.Event()

        def loop():
            while not stop.wait(seconds):
                log(self.line())

        threading.Thread(target=loop, name="grid-progress", daemon=True).start()
        return stop
