"""The figures of pydiffusion, written atomically: one model's (generated beside real signals per class, the
reverse trajectory as a figure and an animated GIF, forward noising beside the reverse process, FD-1D against
sampler steps, accuracy against FD-1D per guidance scale), the command line's (a grid of samples, a run's loss
curves), and, in grid_figures.py on the same canvases, the grid report's. A sample is drawn by `show`: a
signal [L] as a line, an image [C, H, W] in [-1, 1] as pixels.

Each figure is a matplotlib Figure on its own Agg canvas: importing or using this module leaves pyplot's
global backend alone.
"""
import os
from pathlib import Path

import matplotlib
import torch
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from pydiffusion.checkpoints import EPOCH_FIELDS
from pydiffusion.data.labels import NUM_CLASSES
from pydiffusion.diffusion import ops
from pydiffusion.diffusion.samplers import draw_class_samples, run_sampler, timesteps_for
from pydiffusion.files import save_figure

GENERATED_COLOR, REAL_COLOR = "tab:orange", "tab:blue"
# a history's loss components: each its own dash in the grid report (where the colour is the training mode's), and
# its name in words in every legend
COMPONENTS = {"loss": ("-", "total"), "forward": ("-", "forward denoising"), "inverse": ("--", "inverse map"),
              "rt_fi": (":", "roundtrip forward -> inverse"), "rt_if": ("-.", "roundtrip inverse -> forward"),
              "consistency": ((0, (5, 1, 1, 1, 1, 1)), "consistency")}


def new_figure(figsize, *grid, **subplots):
    """A Figure on its own Agg canvas and its axes (fig.subplots(*grid, **subplots))."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*grid, **subplots)


def image_pixels(x):
    """An image [C, H, W] in [-1, 1] as imshow's array in [0, 1]: [H, W] (one channel) or [H, W, C]."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).squeeze(-1).numpy()


def show(ax, x, color=None, lw=0.9):
    """One sample on ax: a signal [L] as a line, an image [C, H, W] as pixels (grey for one channel)."""
    if x.dim() == 1:
        return ax.plot(x.numpy(), color=color, lw=lw)[0]
    return ax.imshow(image_pixels(x), cmap="gray" if x.shape[0] == 1 else None, vmin=0, vmax=1, interpolation="nearest")


# ---- one model ----------------------------------------------------------------------------------------------

def model_figures(denoiser, cfg, data, samples_rows, fig_dir, per_class=4, seed=0):
    """The report's figures of one model (the best configuration's), into fig_dir; samples_rows are
    quality.compare_samplers's rows."""
    _, _, x_test, y_test = data
    noise_path = denoiser.path
    sampler, steps, eta = run_sampler(cfg, noise_path.T)
    samples, labels = draw_class_samples(denoiser, NUM_CLASSES * per_class, sampler, steps, eta, seed=seed)
    per_class_grid(samples, labels, x_test, y_test, fig_dir / "best_per_class.png", per_class)
    digit = 3
    traj = reverse_trajectory(denoiser, digit, seed)
    trajectory_png(traj, fig_dir / "trajectory.png")
    trajectory_gif(traj, timesteps_for(noise_path.T, noise_path.T), fig_dir / "trajectory.gif")
    forward_reverse(x_test[y_test == digit][0], traj, noise_path, fig_dir / "forward_reverse.png")
    samplers_plot(samples_rows, fig_dir / "samplers.png")


def per_class_grid(samples, y, x_real, y_real, path, per_class=4):
    """One row per class: its first `per_class` generated samples (samples, y) on the left and as many real
    signals of it (x_real, y_real: the test set) on the right, each in its own small panel, all on one y scale.
    Returns the Figure."""
    image = samples.dim() == 4
    kinds = (("generated samples", samples, y, GENERATED_COLOR),
             (f"real test {'images' if image else 'signals'}", x_real, y_real, REAL_COLOR))
    shown = [[x[labels == digit][:per_class] for digit in range(NUM_CLASSES)] for _, x, labels, _ in kinds]
    # a narrow empty column between the two kinds
    size = (0.9 * per_class + 1.2, 0.5 * NUM_CLASSES + 0.5) if image else (1.9 * per_class + 1.2, 0.62 * NUM_CLASSES + 0.4)
    fig, axes = new_figure(size, NUM_CLASSES, 2 * per_class + 1, squeeze=False,
                        gridspec_kw={"width_ratios": [1] * per_class + [0.3] + [1] * per_class, "wspace": 0.05,
                                     "hspace": 0.1})
    for ax in axes.flat:
        if not image:
            lim = 1.05 * max(float(signals.abs().max()) for rows in shown for signals in rows if len(signals))
            ax.set_xlim(0, samples.shape[-1] - 1)
            ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[:, per_class]:
        ax.set_axis_off()
    for (title, _, _, color), rows, first in zip(kinds, shown, (0, per_class + 1)):
        group = axes[:, first:first + per_class]
        for ax_row, signals in zip(group, rows):
            for ax, signal in zip(ax_row, signals):
                show(ax, signal, color)
        left, right = group[0][0].get_position().x0, group[0][-1].get_position().x1
        fig.text((left + right) / 2, group[0][0].get_position().y1 + 0.01, title, color=color, ha="center", va="bottom")
    for digit, ax in enumerate(axes[:, 0]):
        ax.set_ylabel(f"digit {digit}", rotation=0, ha="right", va="center", fontsize=8)
    save_figure(fig, path)
    return fig


def reverse_trajectory(denoiser, digit=3, seed=0):
    """[x_T, ..., x_0] of one class-conditional DDIM sample with every step."""
    _, _, xs = draw_class_samples(denoiser, 1, "ddim", denoiser.path.T, seed=seed, label=digit, trajectory=True)
    return [x[0] for x in xs]


def trajectory_png(traj, path, frames=9):
    """A signal's trajectory as lines coloured by step (yellow: the sample); an image's as `frames` evenly spaced
    frames from x_T to x_0."""
    if traj[0].dim() == 1:
        fig, ax = new_figure((8, 4))
        cmap = matplotlib.colormaps["viridis"]
        for i, x in enumerate(traj):
            ax.plot(x.numpy(), color=cmap(i / (len(traj) - 1)), lw=2.0 if i == len(traj) - 1 else 0.7)
        ax.set_title(f"reverse trajectory: {len(traj) - 1} DDIM steps (yellow: the sample)")
    else:
        shown = sorted({round(i * (len(traj) - 1) / (frames - 1)) for i in range(frames)})
        fig, axes = new_figure((1.3 * len(shown), 1.7), 1, len(shown), squeeze=False)
        for ax, i in zip(axes[0], shown):
            show(ax, traj[i])
            ax.set_title(f"step {i}", fontsize=8)
            ax.set_axis_off()
        fig.suptitle(f"reverse trajectory: {len(traj) - 1} DDIM steps", fontsize=9)
    save_figure(fig, path)


def trajectory_gif(traj, timesteps, path, fps=6):
    """An animated GIF of one trajectory [x_T, ..., x_0], frame i titled with timesteps[i]."""
    image = traj[0].dim() == 3
    fig, ax = new_figure((3, 3) if image else (6, 3))
    artist = show(ax, traj[0])
    if image:
        ax.set_axis_off()
    else:
        lim = max(float(torch.stack(traj).abs().max()), 1.0)
        ax.set_ylim(-lim, lim)
    title = ax.set_title("")

    def frame(i):
        if image:
            artist.set_data(image_pixels(traj[i]))
        else:
            artist.set_ydata(traj[i].numpy())
        title.set_text(f"t = {timesteps[i]}")
        return artist, title

    anim = FuncAnimation(fig, frame, frames=len(traj), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")  # PillowWriter writes to a path: write aside, then rename
    anim.save(tmp, writer=PillowWriter(fps=fps))
    os.replace(tmp, path)


def forward_reverse(x0, traj, noise_path, path, columns=6):
    """Top: q_sample of a real signal at increasing t; bottom: the reverse trajectory at the same t."""
    T = noise_path.T
    ts = [round(T * i / (columns - 1)) for i in range(columns)]
    eps = torch.randn((1, *x0.shape), generator=torch.Generator().manual_seed(1))
    fig, axes = new_figure((2.6 * columns, 4.2 if x0.dim() == 1 else 5.4), 2, columns, sharey=True)
    for j, t in enumerate(ts):
        show(axes[0][j], ops.q_sample(x0[None], eps, t, noise_path)[0], "tab:blue", lw=1.5)
        axes[0][j].set_title(f"forward t = {t}", fontsize=9)
        show(axes[1][j], traj[T - t], "tab:orange", lw=1.5)
        axes[1][j].set_title(f"reverse t = {t}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        if x0.dim() > 1:
            ax.set_yticks([])
    save_figure(fig, path)


def samplers_plot(rows, path):
    fig, ax = new_figure((6, 4))
    for name, marker in (("ddim", "o"), ("dpmpp_2m", "s")):
        pts = sorted((r["steps"], r["fd_1d"]) for r in rows if r["sampler"] == name and r["guidance"] == 1.0)
        if pts:
            ax.plot(*zip(*pts), marker=marker, label=name)
    for r in rows:
        if r["sampler"] == "ddpm":
            ax.scatter([r["steps"]], [r["fd_1d"]], marker="^", color="tab:red", label="ddpm (eta = 1)", zorder=3)
    ax.axhline(rows[0]["fd_floor"], ls="--", color="gray", label="floor (train vs test)")
    ax.set_xlabel("sampler steps")
    ax.set_ylabel("FD-1D")
    ax.legend()
    save_figure(fig, path)


def guidance_plot(rows, path):
    """Accuracy of guided samples against FD-1D, one curve per kind of guidance, each point labelled with its
    scale (quality.compare_guidance's rows): the fidelity-diversity trade-off."""
    fig, ax = new_figure((6, 4))
    for kind, marker in (("classifier-free", "o"), ("classifier", "s")):
        pts = [r for r in rows if r["guidance"] == kind]
        ax.plot([r["accuracy"] for r in pts], [r["fd_1d"] for r in pts], marker=marker, label=f"{kind} guidance")
        for r in pts:
            ax.annotate(f"{r['scale']:g}", (r["accuracy"], r["fd_1d"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(rows[0]["fd_floor"], ls="--", color="gray", label="FD floor (train vs test)")
    ax.set_xlabel("accuracy of guided samples (fidelity)")
    ax.set_ylabel("FD-1D (lower: closer to the data)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ---- the command line -----------------------------------------------------------------------------------------

def samples_grid(x, y, path, per_class=16, title=None, real=None):
    """One row per label of y (the null label: "unconditional"), each of its first `per_class` samples in its
    own small panel, all on one y scale. `title`: the figure's title (the sampler and its settings). `real`: (x_real,
    y_real), real samples; each class row then starts with one of its own, in REAL_COLOR under a "real" header,
    the generated ones following in GENERATED_COLOR."""
    labels = sorted(set(y.tolist()))
    rows = [x[y == label][:per_class] for label in labels]
    lead = 0 if real is None else 1
    columns = lead + max(len(row) for row in rows)
    width = 0.55 if x.dim() == 4 else 1.0  # images are square panels
    fig, axes = new_figure((width * columns + 0.6, 0.7 * len(rows) + (0.5 if title or real is not None else 0)),
                           len(rows), columns, sharex=True, sharey=True, squeeze=False)
    for ax_row, label, row in zip(axes, labels, rows):
        ax_row[0].set_ylabel(f"{label}" if label < NUM_CLASSES else "uncond.", rotation=0, ha="right", va="center")
        if real is not None:
            own = real[0][real[1] == label]
            if len(own) and label < NUM_CLASSES:
                show(ax_row[0], own[0], color=REAL_COLOR, lw=0.8)
                for spine in ax_row[0].spines.values():  # marks an image as real too, not only a line
                    spine.set(color=REAL_COLOR, linewidth=1.6)
            else:
                ax_row[0].set_frame_on(False)
        for ax, sample in zip(ax_row[lead:], row):
            show(ax, sample, color=GENERATED_COLOR if real is not None else None, lw=0.8)
        for ax in ax_row[lead + len(row):]:
            ax.set_axis_off()
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if real is not None:
        axes[0][0].set_title("real", fontsize=8, color=REAL_COLOR)
        axes[0][lead].set_title("generated", fontsize=8, color=GENERATED_COLOR, loc="left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    save_figure(fig, path)


def mse_by_t(ax, curves: dict, colors: dict, title: str, log: bool = True, fontsize: int = 9, dashes: dict = None):
    """Curves over t = 1..T ({label: [value at each t]}, e.g. a run's test_mse_forward_t) on ax, each in its colour
    (and its line style in `dashes`, solid where absent) and named in a legend; integer t ticks. The run's plot, the
    grid report's and the ablation study's figures."""
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", lw=1.2, color=colors.get(label),
                linestyle=(dashes or {}).get(label, "-"), label=label)
    if log:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("timestep t", fontsize=fontsize - 1)
    ax.set_title(title, fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 2)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=fontsize - 3)


def loss_curves(history, path, title, mse_t=None):
    """The total training loss and each of its components per epoch (a run's history.json), log scale; with `mse_t`
    (metrics.json's test_mse_forward_t), a second panel of the forward test MSE at each timestep."""
    epochs = [h["epoch"] for h in history]
    components = [k for k in history[0] if k != "loss" and k not in EPOCH_FIELDS]
    marker = "o" if len(epochs) <= 30 else None  # few epochs: show each one
    fig, axes = new_figure((7 if mse_t is None else 12, 4.5), 1, 1 if mse_t is None else 2, squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [h["loss"] for h in history], color="black", lw=2.5, marker=marker, label="total (weighted)")
    for k in components:
        ax.plot(epochs, [h[k] for h in history], lw=1.2, marker=marker, markersize=3,
                label=COMPONENTS[k][1] if k in COMPONENTS else k)
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3, not 3 x 10^-1
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    if high / low < 30:  # the powers of ten alone would leave one or two labels: label every tick
        ax.yaxis.set_minor_formatter(plain)
    if len(epochs) <= 15:
        ax.set_xticks(epochs)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    if mse_t is not None:
        mse_by_t(axes[0][1], {"EMA weights": mse_t}, {"EMA weights": "black"}, "forward test MSE at each timestep")
        axes[0][1].set_ylabel("x0 test MSE (log scale)")
    save_figure(fig, path)
