"""The command line's sample grid: titled with its sampler settings, each class row led by a real test sample of it
(a line for signals, framed pixels for images), one sample per panel."""
import matplotlib.colors as mcolors
import pytest
import torch

from pydiffusion.reporting import figures


@pytest.fixture
def drawn(monkeypatch):
    saved = []
    monkeypatch.setattr(figures, "save_figure", lambda fig, path: saved.append(fig))
    return saved


def test_the_grid_leads_each_class_with_a_real_sample_and_names_its_settings(drawn, tmp_path):
    x, y = torch.randn(12, 40), torch.arange(12) % 4
    x_real, y_real = torch.randn(20, 40), torch.arange(20) % 10
    figures.samples_grid(x, y, tmp_path / "s.png", per_class=3, title="ddim, 20 steps, guidance 1", real=(x_real, y_real))
    [fig] = drawn
    assert fig._suptitle.get_text() == "ddim, 20 steps, guidance 1"
    axes = fig.axes
    assert len(axes) == 4 * (1 + 3), "one real column and one panel per sample"
    rows = [axes[i * 4:(i + 1) * 4] for i in range(4)]
    for label, row in enumerate(rows):
        [real_line] = row[0].lines
        assert mcolors.same_color(real_line.get_color(), figures.REAL_COLOR)
        assert torch.equal(torch.tensor(real_line.get_ydata()), x_real[y_real == label][0])
        for ax, sample in zip(row[1:], x[y == label]):
            [line] = ax.lines
            assert mcolors.same_color(line.get_color(), figures.GENERATED_COLOR)
            assert torch.equal(torch.tensor(line.get_ydata()), sample)
    assert rows[0][0].get_title() == "real" and rows[0][1].get_title(loc="left") == "generated"


def test_images_get_a_framed_real_panel_and_the_plain_grid_stays_as_it_was(drawn, tmp_path):
    x, y = torch.rand(6, 1, 8, 8) * 2 - 1, torch.arange(6) % 3
    figures.samples_grid(x, y, tmp_path / "i.png", per_class=2, real=(torch.rand(9, 1, 8, 8), torch.arange(9) % 3))
    figures.samples_grid(x, y, tmp_path / "plain.png", per_class=2)
    framed, plain = drawn
    assert len(framed.axes) == 3 * 3 and len(plain.axes) == 3 * 2
    assert all(mcolors.same_color(s.get_edgecolor(), figures.REAL_COLOR) for s in framed.axes[0].spines.values())
    assert len(framed.axes[0].images) == 1 and plain._suptitle is None
