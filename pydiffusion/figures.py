"""Figures of one trained model (the usual set of an image DDPM): samples per class, the reverse trajectory as a
figure and an animated GIF, forward noising beside the reverse process, FD-1D against sampler steps; and for
the command line, a grid of samples and a run's loss curves. All written atomically."""
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from . import ops  # noqa: E402
from .data import NUM_CLASSES  # noqa: E402
from .io import save_figure  # noqa: E402
from .sampling import draw_class_samples, timesteps_for  # noqa: E402


def per_class_grid(samples, y, x_train, y_train, path, per_class=8):
    fig, axes = plt.subplots(2, 5, figsize=(15, 5), sharey=True)
    for digit, ax in enumerate(axes.flat):
        for x in samples[y == digit][:per_class]:
            ax.plot(x.numpy(), lw=0.8, alpha=0.8)
        ax.plot(x_train[y_train == digit].mean(0).numpy(), color="black", lw=2)
        ax.set_title(f"digit {digit}")
        ax.set_xticks([])
    save_figure(fig, path)
    plt.close(fig)


def samples_grid(x, y, path, per_class=16):
    """One row per label of y (the null label: "unconditional"), each of its first `per_class` samples in its
    own small panel, all on one y scale."""
    labels = sorted(set(y.tolist()))
    rows = [x[y == label][:per_class] for label in labels]
    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.0 * columns + 0.6, 0.7 * len(rows)), sharex=True,
                             sharey=True, squeeze=False)
    for ax_row, label, row in zip(axes, labels, rows):
        ax_row[0].set_ylabel(f"{label}" if label < NUM_CLASSES else "uncond.", rotation=0, ha="right", va="center")
        for ax, sample in zip(ax_row, row):
            ax.plot(sample.numpy(), lw=0.8)
        for ax in ax_row[len(row):]:
            ax.set_axis_off()
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    save_figure(fig, path)
    plt.close(fig)


def loss_curves(history, path, title):
    """The total training loss and each of its components per epoch (a run's history.json), log scale."""
    epochs = [h["epoch"] for h in history]
    components = [k for k in history[0] if k not in ("epoch", "loss", "lr", "time_s")]
    marker = "o" if len(epochs) <= 30 else None  # few epochs: show each one
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [h["loss"] for h in history], color="black", lw=2.5, marker=marker, label="total (weighted)")
    for k in components:
        ax.plot(epochs, [h[k] for h in history], lw=1.2, marker=marker, markersize=3, label=k)
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
    save_figure(fig, path)
    plt.close(fig)


def reverse_trajectory(model, noise_path, cfg, digit=3, seed=0):
    """[x_T, ..., x_0] of one class-conditional DDIM sample with every step."""
    _, _, xs = draw_class_samples(model, noise_path, cfg, 1, steps=noise_path.T, seed=seed, label=digit, trajectory=True)
    return [x[0] for x in xs]


def trajectory_png(traj, path):
    fig, ax = plt.subplots(figsize=(8, 4))
    cmap = plt.get_cmap("viridis")
    for i, x in enumerate(traj):
        ax.plot(x.numpy(), color=cmap(i / (len(traj) - 1)), lw=2.0 if i == len(traj) - 1 else 0.7)
    ax.set_title(f"reverse trajectory: {len(traj) - 1} DDIM steps (yellow: the sample)")
    save_figure(fig, path)
    plt.close(fig)


def trajectory_gif(traj, timesteps, path, fps=6):
    """An animated GIF of one trajectory [x_T, ..., x_0], frame i titled with timesteps[i]."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(6, 3))
    lim = max(float(torch.stack(traj).abs().max()), 1.0)
    (line,) = ax.plot(traj[0].numpy())
    ax.set_ylim(-lim, lim)
    title = ax.set_title("")

    def frame(i):
        line.set_ydata(traj[i].numpy())
        title.set_text(f"t = {timesteps[i]}")
        return line, title

    anim = FuncAnimation(fig, frame, frames=len(traj), blit=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.gif")  # PillowWriter writes to a path: write aside, then rename
    anim.save(tmp, writer=PillowWriter(fps=fps))
    os.replace(tmp, path)
    plt.close(fig)


def forward_reverse(x0, traj, noise_path, path, columns=6):
    """Top: q_sample of a real signal at increasing t; bottom: the reverse trajectory at the same t."""
    T = noise_path.T
    ts = [round(T * i / (columns - 1)) for i in range(columns)]
    eps = torch.randn((1, 40), generator=torch.Generator().manual_seed(1))
    fig, axes = plt.subplots(2, columns, figsize=(2.6 * columns, 4.2), sharey=True)
    for j, t in enumerate(ts):
        axes[0][j].plot(ops.q_sample(x0[None], eps, t, noise_path)[0].numpy(), color="tab:blue")
        axes[0][j].set_title(f"forward t = {t}", fontsize=9)
        axes[1][j].plot(traj[T - t].numpy(), color="tab:orange")
        axes[1][j].set_title(f"reverse t = {t}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
    save_figure(fig, path)
    plt.close(fig)


def samplers_plot(rows, path):
    fig, ax = plt.subplots(figsize=(6, 4))
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
    plt.close(fig)


def all_for_run(model, noise_path, cfg, data, samples_rows, fig_dir, n_per_class=8, seed=0):
    """Every figure of this module for one model, into fig_dir."""
    x, y, x_test, y_test = data
    samples, labels = draw_class_samples(model, noise_path, cfg, NUM_CLASSES * n_per_class, seed=seed)
    per_class_grid(samples, labels, x, y, fig_dir / "best_per_class.png", n_per_class)
    digit = 3
    traj = reverse_trajectory(model, noise_path, cfg, digit, seed)
    trajectory_png(traj, fig_dir / "trajectory.png")
    trajectory_gif(traj, timesteps_for(noise_path.T, noise_path.T), fig_dir / "trajectory.gif")
    forward_reverse(x_test[y_test == digit][0], traj, noise_path, fig_dir / "forward_reverse.png")
    samplers_plot(samples_rows, fig_dir / "samplers.png")
