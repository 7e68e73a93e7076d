"""Figures, event-file reading and tools/plot_runs.py."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import app
from PIL import Image

from tests.helpers import evaluation as helpers
from tfdaseg.data import labels
from tfdaseg.evaluation import events, plots
from tfdaseg.training import summaries
from tools import plot_runs


def _write_run(run_dir, losses, miou_steps=(), resumed_at=None):
  """Event files as training writes them (tfdaseg.training.summaries)."""
  writer = summaries.create_writer(str(run_dir), chief=True)
  for step, loss in enumerate(losses):
    summaries.write_scalars(writer, step, {"loss/seg": loss,
                                           "lr/generator": 1e-3 * (1 - step / 100)})
  for step in miou_steps:
    summaries.write_scalars(writer, step, {"eval/miou": 0.1 + step / 1000})
  summaries.write_image(writer, 0, "preview", tf.zeros([4, 4, 3], tf.uint8))
  writer.close()
  if resumed_at is not None:
    # A second writer (a resumed run) logs the same step again, later: its value wins.
    writer = summaries.create_writer(str(run_dir), chief=True)
    summaries.write_scalars(writer, resumed_at, {"loss/seg": -1.0})
    writer.close()


def _is_png(path) -> bool:
  with Image.open(path) as image:
    return image.format == "PNG" and min(image.size) > 50


def test_read_scalars_keeps_scalars_by_step_and_the_latest_duplicate(tmp_path):
  _write_run(tmp_path, [3.0, 2.0, 1.5, 1.0], miou_steps=(2,), resumed_at=1)
  scalars = events.read_scalars(str(tmp_path))
  assert sorted(scalars) == ["eval/miou", "loss/seg", "lr/generator"]
  steps, values = scalars["loss/seg"]
  assert steps == [0, 1, 2, 3]
  np.testing.assert_allclose(values, [3.0, -1.0, 1.5, 1.0])
  assert scalars["eval/miou"][0] == [2]


def test_read_scalars_without_events_names_the_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    events.read_scalars(str(tmp_path))


def test_smoothing_is_a_debiased_moving_average():
  np.testing.assert_allclose(plots.smooth([2.0] * 5, 0.9), 2.0)
  np.testing.assert_allclose(plots.smooth([1.0, 3.0], 0.0), [1.0, 3.0])
  np.testing.assert_allclose(plots.smooth([0.0, 10.0], 0.5), [0.0, 5.0 / 0.75])
  with pytest.raises(ValueError):
    plots.smooth([1.0], 1.0)


def test_figures_are_pngs(tmp_path):
  names = labels.CITYSCAPES_CLASSES[:4]
  ious = {"a": {n: 0.1 * i for i, n in enumerate(names)}, "b": {n: None for n in names}}
  matrix = np.arange(16).reshape(4, 4)
  grid_labels = helpers.random_labels(2, height=32, width=64, num_classes=4)
  written = [
      plots.plot_per_class_iou(ious, names, str(tmp_path / "iou.png")),
      plots.plot_confusion(matrix, names, str(tmp_path / "cm.png")),
      plots.plot_curves({"r": {"loss": ([0, 1, 2, 3], [3, 2, 2, 1])}}, str(tmp_path / "c.png"),
                        smoothing=0.5),
      plots.plot_metric_vs_step([1, 2, 3], [0.2, np.nan, 0.5], str(tmp_path / "m.png")),
      plots.save_prediction_grid(helpers.random_images(2), {"truth": grid_labels},
                                 labels.CITYSCAPES_PALETTE, str(tmp_path / "grid.png")),
  ]
  assert all(_is_png(path) for path in written)
  with pytest.raises(ValueError, match="no curves"):
    plots.plot_curves({"r": {}}, str(tmp_path / "empty.png"))


def test_plot_runs_compares_curves_and_per_class_iou(tmp_path, capsys):
  runs = []
  for index, name in enumerate(["source", "adapted"]):
    run = tmp_path / name
    _write_run(run, [3.0 - index, 2.0, 1.0], miou_steps=(1, 2))
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"miou": 0.3, "per_class_iou": {"road": 0.5 + index / 10, "sky": None}}))
    runs.append(str(run))
  out = tmp_path / "figures"
  helpers.run_cli(plot_runs.main, ["plot_runs", f"--runs={','.join(runs)}",
                                   "--labels=src,ada", f"--output={out}", "--smoothing=0.3"])
  assert sorted(os.listdir(out)) == [plot_runs.CURVES_PLOT, plot_runs.MIOU_PLOT,
                                     plot_runs.IOU_PLOT]
  assert "best logged mIoU 10.20" in capsys.readouterr().out
  with pytest.raises(app.UsageError, match="2 runs but 1 labels"):
    helpers.run_cli(plot_runs.main, ["plot_runs", f"--runs={','.join(runs)}", "--labels=x",
                                     f"--output={out}"])
