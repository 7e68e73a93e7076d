"""Figures of results: per-class IoU bars, confusion matrices, training curves, image grids.

Built on `matplotlib.figure.Figure` with the Agg canvas (no pyplot state, no display needed)
and written atomically as PNG.
"""

import io
import math
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfdaseg.data.labels import colourise
from tfdaseg.utils.files import atomic_write_bytes

# Curves: {tag: (steps, values)}.
Curves = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def _save(figure: Figure, path: str) -> str:
  FigureCanvasAgg(figure)
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  atomic_write_bytes(path, buffer.getvalue())
  return path


def plot_per_class_iou(results: Mapping[str, Mapping[str, float | None]],
                       class_names: Sequence[str], path: str, title: str = "") -> str:
  """Grouped bars of per-class IoU (percent), one colour per result, mIoU in the legend.

  Args:
    results: {result name: {class name: IoU in [0, 1], or None when the class did not occur}}.
    class_names: The classes, in display order.
    path: The PNG to write.
    title: Figure title.

  Returns:
    `path`.
  """
  figure = Figure(figsize=(max(6.0, 0.55 * len(class_names) * max(1, len(results)) ** 0.5), 4.5))
  axes = figure.add_subplot()
  width = 0.8 / max(1, len(results))
  positions = np.arange(len(class_names))
  for i, (name, ious) in enumerate(results.items()):
    values = np.array([np.nan if ious.get(c) is None else 100.0 * ious[c] for c in class_names])
    miou = np.nanmean(values) if np.isfinite(values).any() else float("nan")
    axes.bar(positions + (i - (len(results) - 1) / 2) * width, np.nan_to_num(values), width,
             label=f"{name} (mIoU {miou:.1f})")
  axes.set_xticks(positions, class_names, rotation=60, ha="right")
  axes.set_ylabel("IoU (%)")
  axes.set_ylim(0, 100)
  axes.grid(axis="y", alpha=0.3)
  axes.legend(fontsize="small")
  axes.set_title(title)
  return _save(figure, path)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str,
                   title: str = "") -> str:
  """Heatmap of the confusion matrix normalised per ground-truth row (recall per class).

  Args:
    matrix: [n, n] counts, rows ground truth, columns predictions.
    class_names: The n class names.
    path: The PNG to write.
    title: Figure title.

  Returns:
    `path`.
  """
  matrix = np.asarray(matrix, dtype=np.float64)
  rows = matrix.sum(axis=1, keepdims=True)
  normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
  size = 2.0 + 0.45 * len(class_names)
  figure = Figure(figsize=(size + 1.0, size))
  axes = figure.add_subplot()
  image = axes.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
  ticks = np.arange(len(class_names))
  axes.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize="small")
  axes.set_yticks(ticks, class_names, fontsize="small")
  axes.set_xlabel("predicted")
  axes.set_ylabel("ground truth")
  for i, j in zip(*np.nonzero(normalised >= 0.01)):
    axes.text(j, i, f"{100 * normalised[i, j]:.0f}", ha="center", va="center", fontsize=6,
              color="white" if normalised[i, j] > 0.5 else "black")
  figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the row")
  axes.set_title(title)
  return _save(figure, path)


def smooth(values: Sequence[float], weight: float) -> np.ndarray:
  """TensorBoard's exponential moving average, debiased at the start.

  Args:
    values: The raw curve.
    weight: Smoothing in [0, 1); 0 returns the curve unchanged.

  Returns:
    The smoothed curve.
  """
  values = np.asarray(values, dtype=np.float64)
  if not 0.0 <= weight < 1.0:
    raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
  smoothed = np.empty_like(values)
  average = 0.0
  for i, value in enumerate(values):
    average = weight * average + (1.0 - weight) * value
    smoothed[i] = average / (1.0 - weight ** (i + 1))
  return smoothed


def plot_curves(runs: Mapping[str, Curves], path: str, tags: Sequence[str] | None = None,
                title: str = "", smoothing: float = 0.0) -> str:
  """One panel per tag (loss, learning rate, mIoU, ...), one line per run.

  Args:
    runs: {run label: {tag: (steps, values)}}.
    path: The PNG to write.
    tags: The tags to draw, in order; every tag of any run when None.
    title: Figure title.
    smoothing: Exponential moving-average weight (as TensorBoard's slider); the raw curve is
      drawn faintly behind a smoothed one.

  Returns:
    `path`.
  """
  if tags is None:
    tags = sorted({tag for curves in runs.values() for tag in curves})
  if not tags:
    raise ValueError(f"{path}: no curves to plot")
  columns = min(3, len(tags))
  rows = math.ceil(len(tags) / columns)
  figure = Figure(figsize=(4.5 * columns, 3.2 * rows))
  for index, tag in enumerate(tags):
    axes = figure.add_subplot(rows, columns, index + 1)
    for run_index, (label, curves) in enumerate(runs.items()):
      if tag in curves:
        steps, values = curves[tag]
        colour = f"C{run_index}"
        if smoothing > 0 and len(values) > 2:
          axes.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
          values = smooth(values, smoothing)
        axes.plot(steps, values, color=colour, label=label,
                  marker="." if len(steps) < 30 else None)
    axes.set_title(tag, fontsize="medium")
    axes.set_xlabel("step")
    axes.grid(alpha=0.3)
    if len(runs) > 1:
      axes.legend(fontsize="small")
  figure.suptitle(title)
  figure.tight_layout()
  return _save(figure, path)


def plot_metric_vs_step(steps: Sequence[int], values: Sequence[float], path: str,
                        name: str = "mIoU") -> str:
  """A metric against the checkpoint step, the best step marked.

  Args:
    steps: Checkpoint steps.
    values: The metric at each step (NaN allowed).
    path: The PNG to write.
    name: The metric's name.

  Returns:
    `path`.
  """
  figure = Figure(figsize=(6, 4))
  axes = figure.add_subplot()
  axes.plot(steps, values, marker="o")
  finite = np.isfinite(np.asarray(values, dtype=np.float64))
  if finite.any():
    best = int(np.nanargmax(np.where(finite, values, np.nan)))
    axes.scatter([steps[best]], [values[best]], s=120, facecolors="none", edgecolors="red",
                 label=f"best: step {steps[best]} ({values[best]:.2f})", zorder=3)
    axes.legend()
  axes.set_xlabel("step")
  axes.set_ylabel(name)
  axes.grid(alpha=0.3)
  return _save(figure, path)


def save_image_grid(rows: Sequence[Sequence[np.ndarray]], path: str,
                    row_titles: Sequence[str] | None = None,
                    cell_titles: Sequence[Sequence[str]] | None = None,
                    cell_size: float = 2.4) -> str:
  """Draws images in a grid (rows of uint8 RGB arrays; rows may differ in length).

  Args:
    rows: The images, row by row.
    path: The PNG to write.
    row_titles: A label for each row (left of it).
    cell_titles: A small title for each image.
    cell_size: Height of a cell in inches.

  Returns:
    `path`.
  """
  columns = max(len(row) for row in rows)
  aspect = max(image.shape[1] / image.shape[0] for row in rows for image in row)
  figure = Figure(figsize=(cell_size * aspect * columns, cell_size * len(rows)))
  for r, row in enumerate(rows):
    for c in range(columns):
      axes = figure.add_subplot(len(rows), columns, r * columns + c + 1)
      axes.set_xticks([])
      axes.set_yticks([])
      if c < len(row):
        axes.imshow(row[c])
        if cell_titles is not None:
          axes.set_title(cell_titles[r][c], fontsize="x-small")
      else:
        axes.axis("off")
      if c == 0 and row_titles is not None:
        axes.set_ylabel(row_titles[r], fontsize="small")
  figure.tight_layout()
  return _save(figure, path)


def save_prediction_grid(images: Sequence[np.ndarray], rows: Mapping[str, Sequence[np.ndarray]],
                         palette: Sequence[Sequence[int]], path: str) -> str:
  """Images in the first row, then one row of colourised label maps per model or ground truth.

  Args:
    images: uint8 RGB images [H, W, 3], one per column.
    rows: {row name ("ground truth", "source only", ...): one class-id map [H, W] per image}.
    palette: Colours of the class ids (ignored ids are drawn black).
    path: The PNG to write.

  Returns:
    `path`.
  """
  grid = [list(images)] + [[colourise(np.asarray(label), palette) for label in maps]
                           for maps in rows.values()]
  return save_image_grid(grid, path, row_titles=["image", *rows])
