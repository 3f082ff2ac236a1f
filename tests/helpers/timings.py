"""Runs compared for equality leave out the keys that time them (wall-clock and CPU seconds, in metrics.json and
history.json): they differ from run to run."""
from pydiffusion.checkpoints import TIMINGS


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}
