"""Plots of runs (matplotlib, Agg backend, PNG): learning curves and trajectories."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(runs: dict[str, Sequence[Sequence[dict]]], metric: str, path: str | Path) -> Path:
    """Train and validation loss and ``metric`` per epoch; ``runs`` maps a label to the histories of
    its seeds (one line per seed, thin; the mean thick)."""
    base = metric.removeprefix("val_")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, histories) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("loss", base)):
            for split, style in (("train", "--"), ("val", "-")):
                name = f"{split}_{key}"
                curves = [[r[name] for r in h if name in r] for h in histories]
                curves = [c for c in curves if c]
                if not curves:
                    continue
                for c in curves:
                    ax.plot(range(1, len(c) + 1), c, style, color=color, alpha=0.25, lw=0.8)
                length = min(len(c) for c in curves)
                mean = [sum(c[e] for c in curves) / len(curves) for e in range(length)]
                ax.plot(range(1, length + 1), mean, style, color=color, lw=2, label=f"{label} ({split})")
            ax.set_xlabel("epoch")
            ax.set_ylabel(key)
    axes[0].set_title("loss (dashed: train, solid: validation)")
    axes[1].set_title(f"{base} (dashed: train, solid: validation)")
    axes[1].legend(fontsize=7)
    return save_figure(fig, path)


def trajectories(runs: dict[str, Sequence[dict[str, list[float]]]], path: str | Path) -> Path:
    """L2 norm of all parameters and of all gradients per iteration (one line per seed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, per_seed) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        for ax, key in zip(axes, ("param_norm", "grad_norm")):
            for j, traj in enumerate(per_seed):
                values = traj.get(key, [])
                ax.plot(range(1, len(values) + 1), values, color=color, alpha=0.6, lw=0.7,
                        label=label if j == 0 else None)
    axes[0].set_title("||theta||_2 (all parameters)")
    axes[1].set_title("||grad||_2 (all parameters)")
    axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[0].legend(fontsize=7)
    return save_figure(fig, path)
