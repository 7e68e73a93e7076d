"""FC discriminators (output space and features): geometry, layout and gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers


def torch_conv_size(n: int, kernel: int, stride: int, padding: int) -> int:
  return (n + 2 * padding - kernel) // stride + 1


@pytest.mark.parametrize("height,width", [(64, 128), (65, 97)])
def test_output_space_discriminator_is_five_k4_s2_p1_convs(height, width):
  model = tfdaseg.models.build("output_space_discriminator", num_channels=19, base_filters=8)
  out = model(np.zeros((2, height, width, 19), "float32"))
  for _ in range(5):
    height, width = torch_conv_size(height, 4, 2, 1), torch_conv_size(width, 4, 2, 1)
  assert tuple(out.shape) == (2, height, width, 1)
  widths = [model.get_layer(n).filters for n in ("conv1", "conv2", "conv3", "conv4", "classifier")]
  assert widths == [8, 16, 32, 64, 1]


def test_feature_discriminator_fits_small_feature_maps():
  model = tfdaseg.models.build("feature_discriminator", num_channels=32, base_filters=4)
  # Stride-8 features of a 160x320 image: logits at 1/32 of the image.
  out = model(np.zeros((1, 20, 40, 32), "float32"))
  assert tuple(out.shape) == (1, 5, 10, 1)


def test_discriminator_gradients_reach_every_variable():
  model = tfdaseg.models.build("output_space_discriminator", num_channels=3, base_filters=4)
  x = tf.constant(np.random.default_rng(0).random((1, 64, 64, 3)), tf.float32)
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(model(x))
  grads = tape.gradient(loss, model.trainable_variables)
  assert len(grads) == 10 and all(g is not None for g in grads)


def test_discriminator_round_trip(tmp_path):
  model = tfdaseg.models.build("feature_discriminator", num_channels=8, base_filters=4)
  x = np.random.default_rng(0).random((1, 16, 16, 8)).astype("float32")
  model_helpers.assert_keras_round_trip(model, x, str(tmp_path))


def test_class_wise_discriminator_scores_each_class_with_its_own_unit():
  model = tfdaseg.models.build("class_wise_discriminator", num_classes=4, num_channels=6,
                               hidden_units=(8,))
  x = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
  out = keras.ops.convert_to_numpy(model(x))
  assert out.shape == (2, 4)
  # The same feature vector gets different scores under different classes...
  same = np.repeat(x[:, :1], 4, axis=1)
  scores = keras.ops.convert_to_numpy(model(same))
  assert not np.allclose(scores[:, 0], scores[:, 1])
  # ...and one class's logit depends only on that class's features.
  changed = x.copy()
  changed[:, 3] += 1.0
  delta = keras.ops.convert_to_numpy(model(changed)) - out
  np.testing.assert_allclose(delta[:, :3], 0.0, atol=1e-6)


def test_class_wise_discriminator_round_trip(tmp_path):
  model = tfdaseg.models.build("class_wise_discriminator", num_classes=3, num_channels=5,
                               hidden_units=(4, 4))
  x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype("float32")
  model_helpers.assert_keras_round_trip(model, x, str(tmp_path))
