"""Hierarchical region selection: level shapes and ranges, the weighted loss, gradient flow, and
superpixel regions through the public command."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import methods as method_helpers
from tests.helpers import training as helpers
from tfdaseg.methods import cells, losses, region_selection
from tfdaseg.methods.base import GENERATOR, SOURCE, StepContext
from tfdaseg.run_folder import list_checkpoints


def test_region_means_spread_back_over_their_cells():
  values = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 5, 7, 2)
  means = cells.cell_means(tf.constant(values), (2, 3)).numpy()
  rows, columns = [[0, 1, 2], [3, 4]], [[0, 1, 2], [3, 4], [5, 6]]  # floor(i * cells / n)
  for r, row in enumerate(rows):
    for c, column in enumerate(columns):
      np.testing.assert_allclose(means[0, r, c], values[0][np.ix_(row, column)].mean(axis=(0, 1)))
  spread = cells.spread(tf.constant(means), tf.constant([5, 7])).numpy()
  np.testing.assert_allclose(spread[0, 4, 6], means[0, 1, 2])


def test_segment_means_equal_a_numpy_reference_and_never_pool_two_images():
  rng = np.random.default_rng(0)
  values = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
  # Segments at twice the values' resolution, read nearest as the labels are (tf.image.resize,
  # half-pixel centres: the odd pixels); segment 4 of image 1 is not read, and both images use
  # ids 0-2.
  segments = rng.integers(0, 3, (2, 8, 12)).astype(np.int32)
  segments[1, 0, 0] = 4
  assert 4 not in segments[:, 1::2, 1::2]
  actual = region_selection.segment_region_means(tf.constant(values), tf.constant(segments),
                                                 max_segments=5).numpy()
  read = segments[:, 1::2, 1::2]
  for image in range(2):
    for segment in np.unique(read[image]):
      mask = read[image] == segment
      np.testing.assert_allclose(actual[image][mask],
                                 np.broadcast_to(values[image][mask].mean(axis=0),
                                                 (mask.sum(), 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_maps", ["shared", "per_class"])
@pytest.mark.parametrize("regions", ["grid", "superpixels"])
def test_levels_have_their_shapes_and_weights_lie_in_0_1(weight_maps, regions):
  num_classes = 3
  maps = 1 if weight_maps == "shared" else num_classes
  network = region_selection.weighting_network(num_classes, maps, hidden=4)
  prediction = tf.nn.softmax(tf.random.stateless_normal([2, 5, 7, num_classes], [1, 2]) * 5)
  segments = tf.constant(np.arange(2 * 5 * 7).reshape(2, 5, 7) % 4, tf.int32)
  region_means = {
      "grid": lambda v: region_selection.grid_region_means(v, (2, 3)),
      "superpixels": lambda v: region_selection.segment_region_means(v, segments, 4)}[regions]
  logits = region_selection.level_logits(network(prediction), region_means)
  assert {k: tuple(v.shape) for k, v in logits.items()} == {
      "pixel": (2, 5, 7, maps), "region": (2, 5, 7, maps), "image": (2, 1, 1, maps)}
  # One score per region: the region level is constant over each region's pixels.
  region = logits["region"].numpy()
  if regions == "grid":  # the first cell: rows 0-2, columns 0-2 (floor(i * cells / n))
    pixels = region[0, :3, :3].reshape(9, maps)
  else:
    pixels = region[0][segments.numpy()[0] == 1]
  np.testing.assert_allclose(pixels, np.broadcast_to(pixels[0], pixels.shape), atol=1e-6)
  scores = {k: tf.sigmoid(v * 50.0) for k, v in logits.items()}  # saturated, still in [0, 1]
  combined = region_selection.combined_weights(scores).numpy()
  assert combined.shape == (2, 5, 7, maps)
  for value in [*scores.values(), combined]:
    value = np.asarray(value)
    assert value.min() >= 0.0 and value.max() <= 1.0


def test_weighted_source_loss_equals_a_hand_computation():
  # One image of 1x3 pixels, 2 classes; the last pixel is ignored.
  logits = np.array([[[[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]]], np.float32)
  labels = np.array([[[0, 0, 255]]], np.int32)
  weights = np.array([[[0.2, 0.6, 0.9]]], np.float32)
  normalised = region_selection.normalised_weights(tf.constant(weights), tf.constant(labels), 2)
  np.testing.assert_allclose(normalised.numpy(), weights / 0.4, rtol=1e-6)  # mean of 0.2, 0.6
  ce = [np.log1p(np.exp(-2.0)), np.log1p(np.exp(1.0))]
  expected = (0.2 * ce[0] + 0.6 * ce[1]) / (0.2 + 0.6)
  actual = losses.segmentation_loss(tf.constant(logits), tf.constant(labels), 2,
                                    pixel_weights=normalised)
  assert float(actual) == pytest.approx(expected, rel=1e-5)
  per_class = np.array([[[[0.1, 0.7], [0.3, 0.8], [0.5, 0.5]]]], np.float32)
  np.testing.assert_allclose(region_selection.select_map(tf.constant(per_class),
                                                         tf.constant(labels)).numpy(),
                             [[[0.1, 0.3, 0.5]]])


def test_gradients_reach_only_their_own_networks():
  model = helpers.tiny_model("region_selection", weighting_hidden=4, region_grid=(2, 2))
  batch = method_helpers.batch_of(method_helpers.method_arrays(model.method), [0, 1])
  method, networks = model.method, model.all_networks()
  with tf.GradientTape(persistent=True) as tape:
    ctx = StepContext(batch, networks, helpers.NUM_CLASSES, tf.constant(0, tf.int64),
                      tf.constant([0, 0], tf.int32))
    generator_loss = method.generator_objective(ctx).losses[f"seg_main_{SOURCE}"][1]
    weighting_loss = method.network_objectives(ctx)[region_selection.WEIGHTING].total()
  generator_variables = networks[GENERATOR].trainable_variables
  weighting_variables = networks[region_selection.WEIGHTING].trainable_variables
  assert any(g is not None for g in tape.gradient(generator_loss, generator_variables))
  assert all(g is None for g in tape.gradient(generator_loss, weighting_variables))
  assert all(g is None for g in tape.gradient(weighting_loss, generator_variables))
  assert all(g is not None for g in tape.gradient(weighting_loss, weighting_variables))


def test_train_with_superpixel_regions_on_converted_tfrecords(tmp_path):
  patterns = helpers.write_tiny_tfrecords(str(tmp_path / "data"))
  model_dir = str(tmp_path / "run")
  helpers.run_train_main(
      f"--model_dir={model_dir}", "--method=region_selection", "--regions=superpixels",
      "--superpixel_segments=4", "--weighting_hidden=4", "--target_labeled_count=2",
      f"--source_train={patterns['source_train']}",
      f"--labelled_target_train={patterns['target_val']}", *helpers.TINY_TRAIN_FLAGS,
      "--num_steps_stop=2", "--image_summary_every=0")
  assert [step for step, _ in list_checkpoints(model_dir)] == [2]
  assert os.path.exists(os.path.join(model_dir, "target_labeled.txt"))
