"""The Snakemake scripts' frame: progress to the rule's log, a broken input in one line, anything else traced."""
import logging

import pytest

from pydiffusion.files import UnreadableFileError
from pydiffusion.snakemake_script import run_logged


def test_progress_lines_go_to_the_log(tmp_path, capsys):
    log = tmp_path / "step.log"
    run_logged(log, "aggregate", lambda: logging.getLogger("pydiffusion.reporting.report").info("12/24 runs read"))
    assert log.read_text() == "12/24 runs read\n"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("error", [UnreadableFileError("runs/a/metrics.json is not JSON: rerun its training"),
                                   FileNotFoundError("runs/a/metrics.json: no such file")])
def test_a_broken_input_is_one_line_naming_it_and_exit_1(tmp_path, capsys, error):
    def fail():
        raise error

    log = tmp_path / "step.log"
    with pytest.raises(SystemExit) as exit_:
        run_logged(log, "ablations report", fail)
    assert exit_.value.code == 1
    line = f"pydiffusion ablations report: error: {error}\n"
    assert capsys.readouterr().err == line
    assert log.read_text() == line


def test_any_other_failure_leaves_its_traceback_in_the_log(tmp_path, capsys):
    def fail():
        raise ZeroDivisionError("a bug")

    log = tmp_path / "step.log"
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(SystemExit) as exit_:
        run_logged(log, "aggregate", fail)
    assert exit_.value.code == 1
    text = log.read_text()
    assert text.startswith("pydiffusion aggregate failed\nTraceback") and "ZeroDivisionError: a bug" in text
    assert logging.getLogger().handlers == handlers  # the frame takes its handler (on a closed log) away again
