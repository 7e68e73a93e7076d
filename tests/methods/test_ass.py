"""ASS: the class-wise feature averaging against numpy, and where its gradients go."""

import numpy as np
import tensorflow as tf

from tests.helpers import methods as method_helpers
from tests.helpers import training as helpers
from tfdaseg.methods import ass
from tfdaseg.methods.base import GENERATOR, StepContext


def numpy_class_vectors(features, labels, num_classes, ratio):
  """Block shares of each class (labels are an integer multiple of the features' size), the
  cells above `ratio`, the feature mean under them."""
  batch, h, w, channels = features.shape
  fy, fx = labels.shape[1] // h, labels.shape[2] // w
  vectors = np.zeros((batch, num_classes, channels))
  present = np.zeros((batch, num_classes), bool)
  for b in range(batch):
    for c in range(num_classes):
      share = (labels[b] == c).reshape(h, fy, w, fx).mean(axis=(1, 3))
      mask = share > ratio
      if mask.any():
        present[b, c] = True
        vectors[b, c] = features[b][mask].mean(axis=0)
  return vectors, present


def test_class_vectors_equal_a_numpy_reference():
  rng = np.random.default_rng(0)
  num_classes = 5
  features = rng.normal(size=(2, 4, 6, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 16, 24)).astype(np.int32)  # classes 3 and 4 absent
  labels[0, :8, :12] = 1  # a whole cell block of one class
  labels[1, 4:, :] = 255  # ignored pixels count for no class
  labels[1, 0, 0] = 7  # an id outside the class set, too
  for ratio in (0.0, 0.4):
    vectors, present = ass.class_vectors(tf.constant(features), tf.constant(labels),
                                         num_classes, ratio)
    expected_vectors, expected_present = numpy_class_vectors(features, labels, num_classes,
                                                             ratio)
    np.testing.assert_array_equal(present.numpy(), expected_present)
    np.testing.assert_allclose(vectors.numpy(), expected_vectors, atol=1e-5)
  assert not present.numpy()[:, 3:].any() and present.numpy()[0, 1]


def test_semantic_gradients_reach_only_their_own_networks():
  model = helpers.tiny_model("ass", semantic_discriminator_hidden=8, semantic_mask_ratio=0.0)
  batch = method_helpers.batch_of(method_helpers.method_arrays(model.method), [0, 1])
  method, networks = model.method, model.all_networks()
  step, seed = tf.constant(0, tf.int64), tf.constant([0, 0], tf.int32)
  with tf.GradientTape(persistent=True) as tape:
    ctx = StepContext(batch, networks, helpers.NUM_CLASSES, step, seed)
    generator_loss = method.adaptation_objective(ctx).losses["adv_semantic"][1]
    discriminator_loss = method.network_objectives(ctx)[ass.SEMANTIC].total()
  generator_variables = networks[GENERATOR].trainable_variables
  semantic_variables = networks[ass.SEMANTIC].trainable_variables
  from_generator_loss = tape.gradient(generator_loss, generator_variables)
  assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in from_generator_loss)
  assert all(g is None for g in tape.gradient(discriminator_loss, generator_variables))
  assert all(g is not None for g in tape.gradient(discriminator_loss, semantic_variables))
  # The trainer updates the semantic discriminator by its own loss alone, not the generator's.
  _, network_gradients, _ = model._gradients(batch, 1.0, step, seed)
  for actual, expected in zip(network_gradients[ass.SEMANTIC],
                              tape.gradient(discriminator_loss, semantic_variables)):
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=1e-7)
