"""The evaluator: graph-mode accumulation over a dataset equals per-image scoring; class sets."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import evaluation as helpers
from tfdaseg.data import labels
from tfdaseg.data.preprocessing import caffe_preprocess
from tfdaseg.evaluation import evaluator, inference, loading, metrics, reports


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("run"))
  helpers.make_model_dir(model_dir, steps=(1,))
  return loading.load_model("model_dir", model_dir)


def _per_image_matrix(model, images, gt, options, channels=None, num_classes=19):
  """Eager, one image at a time, numpy accumulation: what the graph loop must reproduce."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  for image, label in zip(images, gt):
    probabilities = inference.predict_probabilities(
        model.forward, caffe_preprocess(image[None]), options,
        output_size=tf.constant(label.shape), channels=channels)
    prediction = np.argmax(probabilities.numpy()[0], axis=-1)
    valid = label < num_classes
    np.add.at(matrix, (label[valid], prediction[valid]), 1)
  return matrix


@pytest.mark.parametrize("batch_size,batches_per_call", [(1, 2), (2, 8)])
def test_graph_loop_matches_per_image_scoring(model, batch_size, batches_per_call):
  images = helpers.random_images(5)
  gt = helpers.random_labels(5, height=64, width=128)  # scored at the label's (larger) size
  options = inference.InferenceOptions(input_size=model.input_size, flip=True)
  plan = evaluator.plan_scoring(model.class_set, model.class_set)
  result = evaluator.Evaluator(model, plan, options, batches_per_call).evaluate(
      helpers.eval_batches(images, gt, batch_size), progress=False)
  np.testing.assert_array_equal(result.matrix, _per_image_matrix(model, images, gt, options))
  assert result.num_images == 5
  assert np.isclose(result.metrics["miou"], metrics.mean_iou(result.matrix))


def test_thirteen_classes_are_read_off_the_sixteen_class_matrix(model):
  plan = evaluator.plan_scoring(labels.get_class_set("13"), model.class_set)
  assert plan.matrix_set.name == "16"
  assert plan.channels == list(labels.SYNTHIA16_TRAIN_IDS)
  images = helpers.random_images(3)
  gt = helpers.random_labels(3, num_classes=16)
  options = inference.InferenceOptions(input_size=model.input_size)
  result = evaluator.Evaluator(model, plan, options).evaluate(
      helpers.eval_batches(images, gt), progress=False)
  expected = _per_image_matrix(model, images, gt, options, plan.channels, num_classes=16)
  np.testing.assert_array_equal(result.matrix, expected)
  ious = metrics.per_class_iou(expected)
  assert list(result.metrics["per_class_iou"]) == list(labels.get_class_set("13").names)
  assert np.isclose(result.metrics["miou"], np.nanmean(ious[plan.subset]))


def test_unscorable_class_set_is_refused(model):
  with pytest.raises(ValueError, match="cannot score class set 11"):
    evaluator.plan_scoring(labels.get_class_set("11"), model.class_set)


def test_restoring_another_checkpoint_changes_the_score(tmp_path):
  helpers.make_model_dir(str(tmp_path), steps=(1, 2))
  model = loading.load_model("model_dir", str(tmp_path))
  plan = evaluator.plan_scoring(model.class_set, model.class_set)
  runner = evaluator.Evaluator(model, plan, inference.InferenceOptions(model.input_size))
  dataset = helpers.eval_batches(helpers.random_images(2), helpers.random_labels(2))
  last = runner.evaluate(dataset, progress=False).matrix
  model.restore(tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths[0])
  first = runner.evaluate(dataset, progress=False).matrix
  assert last.sum() == first.sum() and not np.array_equal(last, first)


def test_reports_write_metrics_matrix_and_figures(model, tmp_path):
  plan = evaluator.plan_scoring(model.class_set, model.class_set)
  result = evaluator.Evaluator(model, plan, inference.InferenceOptions(model.input_size)).evaluate(
      helpers.eval_batches(helpers.random_images(2), helpers.random_labels(2)), progress=False)
  record = reports.write_result(result, str(tmp_path), model="tiny")
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
      reports.METRICS_FILE, reports.CONFUSION_FILE, reports.CONFUSION_PLOT, reports.IOU_PLOT])
  np.testing.assert_array_equal(np.load(tmp_path / reports.CONFUSION_FILE), result.matrix)
  assert record["num_images"] == 2 and record["model"] == "tiny"
  table = reports.format_table(result)
  assert "mIoU" in table and "traffic light" in table
