"""The keys of metrics.json and history.json that time a run (wall-clock and CPU seconds): they differ from run to
run, so tests that compare runs for equality leave them out."""
TIMINGS = {"time_s", "cpu_s", "train_time_s", "train_cpu_s"}


def without_timings(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}
