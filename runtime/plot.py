"""The run's main curves as one PNG, drawn from `metrics.jsonl` (so it can be redrawn for any run, any time).

matplotlib with the Agg backend: no display is needed, and nothing else in the process is affected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("score", ("critic/score/mean",)),
    ("response length", ("response_length/mean",)),
    ("loss", ("actor/pg_loss", "critic/vf_loss")),
    ("kl", ("actor/kl_loss", "actor/ppo_kl")),
    ("entropy", ("actor/entropy",)),
    ("validation", ()),  # every val-core/* series
)


def read_metrics(path: Path) -> list[dict[str, float]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line a kill cut short
            continue
    return rows


def plot_curves(metrics_path: Path, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7), constrained_layout=True)
    for ax, (title, keys) in zip(axes.flat, PANELS, strict=True):
        series = keys or sorted({k for row in rows for k in row if k.startswith("val-core/")})
        for key in series:
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=key)
        ax.set_title(title)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(metrics_path.parent.name)
    tmp = out_path.with_name(f".{out_path.stem}.tmp-{os.getpid()}{out_path.suffix}")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_path)
    return out_path
