"""Hierarchical region selection: level shapes and ranges, the weighted loss, gradient flow."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import methods as method_helpers
from tests.helpers import training as helpers
from tfdaseg.methods import cells, losses, region_selection
from tfdaseg.methods.base import GENERATOR, SOURCE, StepContext


def test_region_means_spread_back_over_their_cells():
  values = np.arange(2 * 5 * 7, dtype=np.float32).reshape(1, 5, 7, 2)
  means = cells.cell_means(tf.constant(values), (2, 3)).numpy()
  rows, columns = [[0, 1, 2], [3, 4]], [[0, 1, 2], [3, 4], [5, 6]]  # floor(i * cells / n)
  for r, row in enumerate(rows):
    for c, column in enumerate(columns):
      np.testing.assert_allclose(means[0, r, c], values[0][np.ix_(row, column)].mean(axis=(0, 1)))
  spread = cells.spread(tf.constant(means), tf.constant([5, 7])).numpy()
  np.testing.assert_allclose(spread[0, 4, 6], means[0, 1, 2])


@pytest.mark.parametrize("weight_maps", ["shared", "per_class"])
def test_levels_have_their_shapes_and_weights_lie_in_0_1(weight_maps):
  num_classes = 3
  maps = 1 if weight_maps == "shared" else num_classes
  network = region_selection.weighting_network(num_classes, maps, hidden=4)
  prediction = tf.nn.softmax(tf.random.stateless_normal([2, 5, 7, num_classes], [1, 2]) * 5)
  logits = region_selection.level_logits(network(prediction), (2, 3))
  assert {k: tuple(v.shape) for k, v in logits.items()} == {
      "pixel": (2, 5, 7, maps), "region": (2, 2, 3, maps), "image": (2, 1, 1, maps)}
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
