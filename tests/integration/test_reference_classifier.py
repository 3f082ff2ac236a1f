"""The reference classifier: its recorded accuracy, and the CLI's classifier reaching 97 percent."""
import subprocess
import sys

from pydiffusion.data.mnist1d import load_mnist1d
from pydiffusion.nets.classifiers import accuracy, load_classifier, save_classifier, train_classifier


def test_classifier_accuracy_is_what_was_recorded(tmp_path):
    x, y, x_test, y_test = load_mnist1d()
    model, acc = train_classifier(x[:1000], y[:1000], x_test, y_test, epochs=2, log=lambda s: None)
    save_classifier(model, acc, tmp_path / "c.pt")
    loaded, recorded = load_classifier(tmp_path / "c.pt")
    assert recorded == acc == accuracy(loaded, x_test, y_test)
    assert acc > 0.3, "two epochs on 1,000 signals already beat chance (0.1) by far"


def test_reference_classifier_reaches_97_percent(tmp_path):
    out = tmp_path / "classifier.pt"
    r = subprocess.run([sys.executable, "-m", "pydiffusion.cli.main", "classifier", "--out", str(out), "--threads", "1"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    model, recorded = load_classifier(out)
    _, _, x_test, y_test = load_mnist1d()
    assert recorded == accuracy(model, x_test, y_test)
    assert recorded >= 0.97
