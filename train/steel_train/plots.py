"""PNG plots a run folder keeps: training curves, class counts, confusion matrix, worst-image overlays."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training box
    import matplotlib.pyplot as plt

    return plt


def history_plot(history_csv: Path, out: Path, title: str) -> None:
    """Loss curves (train vs validation) on the left, every other metric on the right, per epoch.

    A soup's history (a ``member`` column: several fine-tunings one after another) is drawn end to end,
    with a dotted line where the next fine-tuning starts.
    """
    plt = _pyplot()
    with history_csv.open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    # Keras' CSVLogger writes "NA" for a metric an epoch lacks (e.g. val_* when there is no validation split).
    cols = {k: np.array([float(r[k]) if r[k] not in ("", "NA") else np.nan for r in rows])
            for k in rows[0] if k not in ("epoch", "member")}
    starts = [n + 1 for n in range(1, len(rows)) if rows[n].get("member") != rows[n - 1].get("member")]
    cols = {k: v for k, v in cols.items() if not np.isnan(v).all()}
    epochs = np.arange(1, len(rows) + 1)
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in cols.items():
        base = name.removeprefix("val_")
        if base == "learning_rate":
            continue
        ax = ax_loss if base.endswith("loss") else ax_metric
        ax.plot(epochs, values, marker="o", markersize=3, linestyle="--" if name.startswith("val_") else "-",
                label=name)
    xlabel = f"epoch ({len(starts) + 1} fine-tunings, end to end)" if starts else "epoch"
    ax_loss.set(title="loss (solid: train, dashed: validation)", xlabel=xlabel, ylabel="loss")
    ax_metric.set(title="metrics (solid: train, dashed: validation)", xlabel=xlabel)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_metric):
        for start in starts:
            ax.axvline(start - 0.5, color="grey", linestyle=":", linewidth=1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def class_count_plot(names: Sequence[str], counts: Sequence[int], out: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(names)), 4))
    bars = ax.bar(list(names), list(counts), color="#4a78a8")
    ax.bar_label(bars)
    ax.set(title=title, xlabel="class", ylabel="images")
    ax.tick_params(axis="x", rotation=20 if max(len(n) for n in names) > 6 else 0)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def confusion_plot(matrix: np.ndarray, names: Sequence[str], out: Path, title: str) -> None:
    """Counts with row-normalised colour (recall per true class), true classes down, predictions across."""
    plt = _pyplot()
    cm = np.asarray(matrix)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 3, 1.0 * len(names) + 2.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def worst_overlays(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], out: Path, title: str
) -> None:
    """Stack (caption, gray image, true (4,H,W), predicted (4,H,W)) panels: true outlines solid, predicted dashed.

    Colours per class come from ``steel_edge.viz`` so the edge's annotated frames look the same.
    """
    from steel_edge.viz import CLASS_COLORS, draw_truth_vs_pred

    rows = []
    for caption, image, true, pred in panels:
        canvas = draw_truth_vs_pred(image, true, pred)
        bar = np.full((28, canvas.shape[1], 3), 30, np.uint8)
        cv2.putText(bar, caption, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        rows += [bar, canvas]
    if not rows:
        return
    header = np.full((34, rows[0].shape[1], 3), 255, np.uint8)
    cv2.putText(header, title + "   (solid: true, dashed: predicted)", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7,
                (0, 0, 0), 1, cv2.LINE_AA)
    x = 900
    for class_id, color in sorted(CLASS_COLORS.items()):
        cv2.rectangle(header, (x, 10), (x + 18, 26), color, -1)
        cv2.putText(header, f"class {class_id}", (x + 24, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
        x += 130
    cv2.imwrite(str(out), np.vstack([header, *rows]))
