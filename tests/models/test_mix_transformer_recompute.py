"""`MitConfig.recompute` (gradient checkpointing of the MiT blocks' attention and Mix-FFN): the
same gradients with drop path active, the same variables and layers, recomputation in the
backward pass only in training, and the option's path from `--model_options`."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import models as model_helpers
from tfdaseg.models import mix_transformer
from tfdaseg.models.dropout import DropPath
from tfdaseg.models.mix_transformer import MixAttention, MixFFN

# Tiny MiT: 5 blocks, so 10 recomputed layers.
_BLOCKS = sum(model_helpers.TINY_MIT["depths"])
# High enough that, over 4 images and 5 blocks, some residual branches are dropped.
_DROP_PATH_RATE = 0.5


def _generator(recompute: bool) -> keras.Model:
  keras.utils.set_random_seed(0)
  return model_helpers.tiny_generator(
      "daformer_mit_b0", num_classes=5, drop_path_rate=_DROP_PATH_RATE,
      encoder_options={**model_helpers.TINY_MIT, "recompute": recompute})


def _pair() -> tuple[keras.Model, keras.Model]:
  plain, recomputed = _generator(False), _generator(True)
  recomputed.set_weights(plain.get_weights())
  return plain, recomputed


def _batch() -> tuple[np.ndarray, np.ndarray]:
  images = model_helpers.random_image(48, 40, batch=4)
  # A fixed random cotangent: every logit gets its own weight.
  weights = np.random.default_rng(1).normal(size=(4, 12, 10, 5)).astype(np.float32)
  return images, weights


def _loss_and_gradients(model: keras.Model, images: np.ndarray, weights: np.ndarray):
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(model(images, training=True)["logits"] * weights)
  return loss, tape.gradient(loss, model.trainable_variables)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_recompute_gives_the_same_gradients_with_drop_path_active(compiled):
  plain, recomputed = _pair()
  images, weights = _batch()
  step = tf.function(_loss_and_gradients) if compiled else _loss_and_gradients
  loss, gradients = step(plain, images, weights)
  recomputed_loss, recomputed_gradients = step(recomputed, images, weights)
  # Drop path is really active: the same weights without it compute another loss.
  no_drop = model_helpers.tiny_generator(
      "daformer_mit_b0", num_classes=5, drop_path_rate=0.0, encoder_options=model_helpers.TINY_MIT)
  no_drop.set_weights(plain.get_weights())
  assert abs(float(step(no_drop, images, weights)[0]) - float(loss)) > 1e-3
  np.testing.assert_allclose(float(recomputed_loss), float(loss), rtol=1e-6)
  assert len(recomputed_gradients) == len(gradients)
  for variable, expected, actual in zip(plain.trainable_variables, gradients,
                                        recomputed_gradients):
    assert actual is not None, variable.path
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-5, rtol=1e-5,
                               err_msg=variable.path)


def test_recompute_keeps_the_layers_and_variables():
  plain, recomputed = _pair()
  assert [layer.name for layer in recomputed.layers] == [layer.name for layer in plain.layers]
  assert ([v.path for v in recomputed.trainable_variables]
          == [v.path for v in plain.trainable_variables])
  assert len(recomputed.trainable_variables) == len(plain.trainable_variables)
  assert len(recomputed.non_trainable_variables) == len(plain.non_trainable_variables)
  # The block's DropPaths stay top-level, where without_training_randomness finds them.
  assert sum(isinstance(layer, DropPath) for layer in recomputed.layers) == 2 * _BLOCKS


def _count_forwards(monkeypatch) -> dict:
  """Counts recompute_grad wrappings and runs of the wrapped forwards."""
  counts = {"wrapped": 0, "forwards": 0}
  real = tf.recompute_grad

  def spy(forward):
    counts["wrapped"] += 1

    def counted(*args, **kwargs):
      counts["forwards"] += 1
      return forward(*args, **kwargs)

    return real(counted)

  monkeypatch.setattr(mix_transformer.tf, "recompute_grad", spy)
  return counts


def test_the_backward_pass_recomputes_each_attention_and_mix_ffn(monkeypatch):
  _, recomputed = _pair()
  images, weights = _batch()
  counts = _count_forwards(monkeypatch)
  _loss_and_gradients(recomputed, images, weights)
  # Eagerly: one forward, then one recomputation in the backward pass, per wrapped layer.
  assert counts == {"wrapped": 2 * _BLOCKS, "forwards": 4 * _BLOCKS}


def test_inference_and_the_plain_model_do_not_recompute(monkeypatch):
  plain, recomputed = _pair()
  images, _ = _batch()
  counts = _count_forwards(monkeypatch)
  recomputed(images, training=False)
  plain(images, training=True)
  assert counts == {"wrapped": 0, "forwards": 0}


def test_recompute_is_set_through_model_options_and_saved(tmp_path):
  # What `--model_options='{"encoder_options": {"recompute": true}}'` passes to the builder.
  options = json.loads('{"encoder_options": {"recompute": true}}')
  options["encoder_options"].update(model_helpers.TINY_MIT)
  model = tfdaseg.models.build("daformer_mit_b0", num_classes=5, embed_dim=8, **options)
  wrapped = [layer for layer in model.layers if isinstance(layer, (MixAttention, MixFFN))]
  assert len(wrapped) == 2 * _BLOCKS and all(layer.recompute for layer in wrapped)
  loaded = model_helpers.assert_keras_round_trip(model, model_helpers.random_image(32, 32),
                                                 str(tmp_path))
  assert all(loaded.get_layer(layer.name).recompute for layer in wrapped)


def test_recompute_defaults_off():
  assert not any(config.recompute for config in mix_transformer.MIT_CONFIGS.values())
  model = _generator(False)
  assert not any(layer.recompute for layer in model.layers
                 if isinstance(layer, (MixAttention, MixFFN)))
