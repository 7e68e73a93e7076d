"""BatchNorm modes: the reference's train-mode BatchNorm with frozen affine parameters, frozen and
fully trained BatchNorm, in layers and generators, saved, and in mixed precision (the PyTorch
parity of "reference" is in test_torch_parity.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models.batch_norm import (BN_EPSILON, BN_MOMENTUM, ReferenceBatchNormalization,
                                       batch_norm)


def _randomised_layer(seed: int = 0) -> tuple[ReferenceBatchNormalization, np.ndarray]:
  rng = np.random.default_rng(seed)
  x = rng.normal(1.0, 2.0, (2, 5, 4, 3)).astype("float32")
  layer = ReferenceBatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
  layer.build(x.shape)
  for variable, low in ((layer.gamma, 0.5), (layer.moving_variance, 0.5)):
    variable.assign(rng.uniform(low, 1.5, 3).astype("float32"))
  for variable in (layer.beta, layer.moving_mean):
    variable.assign(rng.normal(0.0, 0.1, 3).astype("float32"))
  return layer, x


def test_training_forward_follows_torch_batch_norm():
  layer, x = _randomised_layer()
  gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
  old_mean, old_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  out = layer(x, training=True)
  # torch.nn.functional.batch_norm(training=True, momentum=0.1): normalise with the biased batch
  # variance, move running_var towards the unbiased one.
  mean, variance, count = x.mean((0, 1, 2)), x.var((0, 1, 2)), x.size / x.shape[-1]
  np.testing.assert_allclose(out, (x - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(layer.moving_mean, 0.9 * old_mean + 0.1 * mean, rtol=1e-6)
  np.testing.assert_allclose(layer.moving_variance,
                             0.9 * old_variance + 0.1 * variance * count / (count - 1), rtol=1e-6)


def test_inference_uses_the_running_statistics():
  layer, x = _randomised_layer()
  statistics = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  out = layer(x, training=False)
  mean, variance = statistics
  np.testing.assert_allclose(
      out, (x - mean) / np.sqrt(variance + BN_EPSILON) * layer.gamma.numpy() + layer.beta.numpy(),
      rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(layer.moving_mean, statistics[0])


def test_affine_parameters_stay_frozen_and_inputs_get_gradients():
  layer, x = _randomised_layer()
  layer.trainable = True  # What toggling a whole model does; gamma and beta must stay frozen.
  assert layer.trainable_variables == []
  assert [v.name for v in layer.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
  x = tf.constant(x)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=True) ** 3)
  assert np.all(np.isfinite(tape.gradient(loss, x)))


def test_serialises_under_the_tfdaseg_package():
  layer, _ = _randomised_layer()
  config = keras.saving.serialize_keras_object(layer)
  assert config["registered_name"] == "tfdaseg>ReferenceBatchNormalization"
  rebuilt = keras.saving.deserialize_keras_object(config)
  assert isinstance(rebuilt, ReferenceBatchNormalization)
  assert rebuilt.get_config() == layer.get_config()


def _bn_layers(model: keras.Model) -> list:
  return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def _statistics(model: keras.Model) -> list:
  return [v.numpy().copy() for layer in _bn_layers(model)
          for v in (layer.moving_mean, layer.moving_variance)]


def _bn_variables(model: keras.Model) -> list:
  return [v for layer in _bn_layers(model) for v in layer.weights]


@pytest.mark.parametrize("bn_mode,statistics_move,affine_trained", [
    ("reference", True, False), ("frozen", False, False), ("train", True, True)])
def test_generator_bn_modes(bn_mode, statistics_move, affine_trained):
  model = model_helpers.tiny_generator(bn_mode=bn_mode)
  model_helpers.randomise_batch_norm(model)
  x = model_helpers.random_image(33, 41, batch=2)
  eval_out = model(x, training=False)["logits"]
  before = _statistics(model)
  train_out = model(x, training=True)["logits"]
  moved = [not np.array_equal(a, b) for a, b in zip(before, _statistics(model))]
  assert all(moved) if statistics_move else not any(moved)
  # Batch statistics normalise in training unless BatchNorm is frozen.
  assert np.allclose(train_out, eval_out, rtol=1e-5) == (bn_mode == "frozen")
  trainable = {id(v) for v in model.trainable_variables}
  trained = [id(v) in trainable for v in _bn_variables(model) if "moving" not in v.path]
  assert all(trained) if affine_trained else not any(trained)
  assert not any(id(v) in trainable for v in _bn_variables(model) if "moving" in v.path)


def test_unknown_bn_mode_is_refused():
  for name in model_helpers.TINY_GENERATOR_OPTIONS:
    with pytest.raises(ValueError, match="unknown bn_mode 'freeze'; known: reference, frozen"):
      model_helpers.tiny_generator(name, bn_mode="freeze")
  with pytest.raises(ValueError, match="unknown bn_mode"):
    batch_norm(keras.Input((4, 4, 2)), "bn", "eval")


def test_reference_generator_round_trip(tmp_path):
  model = model_helpers.tiny_generator(bn_mode="reference")
  model_helpers.randomise_batch_norm(model)
  loaded = model_helpers.assert_keras_round_trip(model, model_helpers.random_image(41, 35),
                                                 str(tmp_path))
  assert all(isinstance(layer, ReferenceBatchNormalization) for layer in _bn_layers(loaded))
  assert [v.path for v in loaded.trainable_variables] == [
      v.path for v in model.trainable_variables]


def test_reference_mode_in_mixed_bfloat16(mixed_bfloat16):
  model = model_helpers.tiny_generator(bn_mode="reference")
  model_helpers.randomise_batch_norm(model)
  before = _statistics(model)
  x = model_helpers.random_image(33, 33, batch=2)
  with tf.GradientTape() as tape:
    out = model(x, training=True)
    loss = sum(tf.reduce_mean(tf.cast(out[key], tf.float32) ** 2)
               for key in ("logits", "aux_logits"))
  assert out["logits"].dtype == tf.bfloat16
  assert all(v.dtype == tf.float32 for v in _bn_variables(model))
  assert all(not np.array_equal(a, b) for a, b in zip(before, _statistics(model)))
  assert all(np.all(np.isfinite(s)) for s in _statistics(model))
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None and np.all(np.isfinite(g)) for g in grads)
  assert not any("gamma" in v.path or "beta" in v.path for v in model.trainable_variables)


def test_mixed_precision_training_normalises_the_bfloat16_activation_without_casts(
    mixed_bfloat16):
  layer, x = _randomised_layer()
  gamma, beta = layer.gamma.numpy(), layer.beta.numpy()
  old_mean, old_variance = layer.moving_mean.numpy(), layer.moving_variance.numpy()
  x16 = tf.cast(x, tf.bfloat16)
  graph = tf.function(lambda v: layer(v, training=True)).get_concrete_function(x16).graph
  batch_norms = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
  assert [op.inputs[0].dtype for op in batch_norms] == [tf.bfloat16]
  assert not [op for op in graph.get_operations() if op.type == "Cast"]
  layer.moving_mean.assign(old_mean)
  layer.moving_variance.assign(old_variance)
  out = layer(x16, training=True)
  assert out.dtype == tf.bfloat16
  # Statistics of the bfloat16-rounded input, reduced in float32 (as in float32 mode).
  rounded = np.array(tf.cast(x16, tf.float32))
  mean, variance, count = rounded.mean((0, 1, 2)), rounded.var((0, 1, 2)), x.size / x.shape[-1]
  np.testing.assert_allclose(np.array(tf.cast(out, tf.float32)),
                             (rounded - mean) / np.sqrt(variance + BN_EPSILON) * gamma + beta,
                             rtol=1e-2, atol=2e-2)
  np.testing.assert_allclose(layer.moving_mean, 0.9 * old_mean + 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance,
                             0.9 * old_variance + 0.1 * variance * count / (count - 1), rtol=1e-5)
