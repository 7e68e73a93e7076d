"""`tfdaseg.evaluate` end to end on a TFRecord split: one checkpoint, every checkpoint."""

import csv
import json

import numpy as np
import pytest

from tests.helpers import evaluation as helpers
from tfdaseg import evaluate
from tfdaseg.evaluation import metrics, reports


@pytest.fixture(scope="module")
def split(tmp_path_factory):
  folder = tmp_path_factory.mktemp("data")
  gt = helpers.random_labels(3, height=64, width=128)  # scored at the full label size
  return helpers.write_split(str(folder), helpers.random_images(3), gt), gt


def test_evaluate_one_checkpoint(tmp_path, split, capsys):
  pattern, gt = split
  helpers.make_model_dir(str(tmp_path / "run"))
  helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--model_dir={tmp_path / 'run'}",
                                  f"--data={pattern}", "--flip"])
  out = tmp_path / "run" / "eval"
  record = json.loads((out / reports.METRICS_FILE).read_text())
  matrix = np.load(out / reports.CONFUSION_FILE)
  assert matrix.sum() == np.sum(gt < helpers.NUM_CLASSES) == record["num_pixels"]
  assert record["num_images"] == 3 and record["options"]["flip"] is True
  assert np.isclose(record["miou"], metrics.mean_iou(matrix))
  assert (out / reports.CONFUSION_PLOT).exists() and (out / reports.IOU_PLOT).exists()
  assert "mIoU" in capsys.readouterr().out


def test_evaluate_all_checkpoints_names_the_best(tmp_path, split, capsys):
  pattern, _ = split
  helpers.make_model_dir(str(tmp_path / "run"), steps=(10, 20, 30))
  out = tmp_path / "scores"
  helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--model_dir={tmp_path / 'run'}",
                                  f"--data={pattern}", "--all_checkpoints",
                                  f"--output_dir={out}", "--class_set=16"])
  with open(out / reports.CHECKPOINTS_CSV) as f:
    rows = list(csv.DictReader(f))
  assert [int(r["step"]) for r in rows] == [10, 20, 30]
  assert "terrain" not in rows[0] and "road" in rows[0]
  table = json.loads((out / reports.CHECKPOINTS_JSON).read_text())
  best = max(table["rows"], key=lambda r: r["miou"])
  assert table["best_step"] == best["step"]
  assert (table["last_step"], table["last_miou"]) == (30, table["rows"][-1]["miou"])
  assert json.loads((out / reports.METRICS_FILE).read_text())["miou"] == best["miou"]
  assert (out / reports.CHECKPOINTS_PLOT).exists()
  printed = capsys.readouterr().out
  assert f"best step: {best['step']} (mIoU {100 * best['miou']:.2f}" in printed
  assert f"last step: 30 (mIoU {100 * table['rows'][-1]['miou']:.2f})" in printed


def test_evaluate_needs_data():
  with pytest.raises(Exception, match="--data is required"):
    helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", "--model_dir=/nonexistent"])


def test_exported_saved_model_scores_like_its_run(tmp_path, split):
  from tfdaseg.evaluation import inference, loading
  from tfdaseg.export import exporter

  pattern, _ = split
  helpers.make_model_dir(str(tmp_path / "run"))
  model = loading.load_model("model_dir", str(tmp_path / "run"))
  export = exporter.export_model(
      exporter.ExportRequest(model, model.class_set, inference.InferenceOptions(model.input_size)),
      str(tmp_path / "export"))
  scores = {}
  for source, path in [("model_dir", tmp_path / "run"), ("saved_model", export)]:
    helpers.run_cli(evaluate.main, ["tfdaseg-evaluate", f"--{source}={path}",
                                    f"--data={pattern}", f"--output_dir={tmp_path / source}"])
    scores[source] = json.loads((tmp_path / source / reports.METRICS_FILE).read_text())
  assert scores["saved_model"]["num_pixels"] == scores["model_dir"]["num_pixels"]
  assert scores["saved_model"]["miou"] == pytest.approx(scores["model_dir"]["miou"], abs=1e-3)


def test_a_keras_file_without_its_input_size_needs_input_size(tmp_path, split):
  # An imported .keras records no input size; running at the label's 2048x1024 would silently
  # score another protocol than the references' 1024x512.
  pattern, _ = split
  path = str(tmp_path / "imported.keras")
  helpers.tiny_generator().save(path)
  argv = ["tfdaseg-evaluate", f"--model={path}", "--model_class_set=19", f"--data={pattern}",
          f"--output_dir={tmp_path / 'eval'}"]
  with pytest.raises(Exception, match=r"imported\.keras records no input size.*--input_size"):
    helpers.run_cli(evaluate.main, argv)
  helpers.run_cli(evaluate.main, [*argv, "--input_size=64,32"])
  assert json.loads((tmp_path / "eval" / reports.METRICS_FILE).read_text())["num_images"] == 3
