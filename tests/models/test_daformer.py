"""MiT generators (DAFormer and SegFormer heads): shapes at any input size, the reference's sizes,
saving, dropout, head variables, precision, and a DACS training step on them (PyTorch parity:
test_daformer_parity.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfdaseg.models
from tests.helpers import methods as method_helpers
from tests.helpers import models as model_helpers
from tests.helpers import training as training_helpers
from tfdaseg.models.dropout import ChannelDropout, DropPath, without_training_randomness
from tfdaseg.models.mix_transformer import MIT_CONFIGS, MixAttention, MitConfig, drop_path_rates


def torch_stage_sizes(n: int) -> list[int]:
  """Stage sizes from PyTorch's conv formula: 7x7/4 pad 3, then 3x3/2 pad 1 three times."""
  sizes = [(n + 2 * 3 - 7) // 4 + 1]
  for _ in range(3):
    sizes.append((sizes[-1] + 2 - 3) // 2 + 1)
  return sizes


def _tiny(name: str = "daformer_mit_b0", **options) -> keras.Model:
  return model_helpers.tiny_generator(name, num_classes=5, **options)


@pytest.mark.parametrize("name", ["daformer_mit_b0", "segformer_mit_b0"])
def test_one_model_takes_any_input_size(name):
  model = _tiny(name)
  for height, width in ((29, 29), (45, 70), (512, 1024)):
    out = model(model_helpers.random_image(height, width), training=False)
    heights, widths = torch_stage_sizes(height), torch_stage_sizes(width)
    assert sorted(out) == ["features", "logits"]
    assert tuple(out["logits"].shape) == (1, heights[0], widths[0], 5)
    assert tuple(out["features"].shape) == (1, heights[3], widths[3], 16)


def test_variants_have_the_reference_sizes():
  # mix_transformer.py mit_b0 ... mit_b5.
  wide = (64, 128, 320, 512)
  assert MIT_CONFIGS == {
      "b0": MitConfig((32, 64, 160, 256), (1, 2, 5, 8), (2, 2, 2, 2), (8, 4, 2, 1), 4),
      "b1": MitConfig(wide, (1, 2, 5, 8), (2, 2, 2, 2), (8, 4, 2, 1), 4),
      "b2": MitConfig(wide, (1, 2, 5, 8), (3, 4, 6, 3), (8, 4, 2, 1), 4),
      "b3": MitConfig(wide, (1, 2, 5, 8), (3, 4, 18, 3), (8, 4, 2, 1), 4),
      "b4": MitConfig(wide, (1, 2, 5, 8), (3, 8, 27, 3), (8, 4, 2, 1), 4),
      "b5": MitConfig(wide, (1, 2, 5, 8), (3, 6, 40, 3), (8, 4, 2, 1), 4),
  }
  assert drop_path_rates((1, 2, 1, 1), 0.1) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])


def test_full_size_daformer_head():
  model = tfdaseg.models.build("daformer_mit_b0", num_classes=19)
  assert model.get_layer("decode_head_embed_3").kernel.shape == (256, 256)
  assert model.get_layer("decode_head_aspp_3_depthwise").kernel.shape == (3, 3, 1024, 1)
  assert model.get_layer("decode_head_aspp_3_depthwise").dilation_rate == (18, 18)
  assert model.get_layer("decode_head_aspp_0").kernel.shape == (1, 1, 1024, 256)
  assert model.get_layer("decode_head_bottleneck").kernel.shape == (3, 3, 1024, 256)
  assert model.get_layer("decode_head_classifier").kernel.shape == (1, 1, 256, 19)
  assert model.get_layer("block4_1_attn").sr_ratio == 1
  assert model.get_layer("block1_0_attn").sr.kernel.shape == (8, 8, 32, 32)
  # Linear from 0 to 0.1 over the 8 blocks.
  assert model.get_layer("block4_1_drop_path2").rate == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["daformer_mit_b0", "segformer_mit_b0"])
def test_keras_file_round_trip(name, tmp_path):
  model = _tiny(name)
  model_helpers.randomise_batch_norm(model)
  model_helpers.assert_keras_round_trip(model, model_helpers.random_image(41, 67), str(tmp_path))


def test_dropout_draws_follow_the_input_and_teachers_have_none():
  model = _tiny(bn_mode="frozen", drop_path_rate=0.5, dropout=0.5)
  x, other = model_helpers.random_image(45, 45, batch=4), model_helpers.random_image(45, 45, 4, 1)
  evaluation = model(x, training=False)["logits"].numpy()
  first, second = (model(x, training=True)["logits"].numpy() for _ in range(2))
  assert not np.allclose(first, evaluation, rtol=1e-3)
  # The same input draws the same masks (no seed state): what resuming a run relies on.
  np.testing.assert_array_equal(first, second)
  assert not np.allclose(model(other, training=True)["logits"], model(other, training=False)[
      "logits"], rtol=1e-3)
  stochastic = [layer for layer in model.layers if isinstance(layer, (DropPath, ChannelDropout))]
  assert len(stochastic) == 2 * 5 + 1
  without_training_randomness(model)
  np.testing.assert_allclose(model(x, training=True)["logits"], evaluation, rtol=1e-6,
                             atol=1e-6)


def test_head_variables_are_the_decode_head():
  model = _tiny()
  backbone, head = tfdaseg.models.split_head_variables(model)
  assert len(backbone) + len(head) == len(model.trainable_variables)
  assert head and all(v.path.startswith("decode_head_") for v in head)
  assert not any(v.path.startswith("decode_head_") for v in backbone)
  assert tfdaseg.models.head_learning_rate_multiplier(model) == 10.0


def test_no_decay_variables_are_the_encoder_layer_norms():
  model = _tiny()
  spared = tfdaseg.models.no_decay_variables(model)
  norms = [layer for layer in model.layers if isinstance(layer, keras.layers.LayerNormalization)]
  reductions = [layer.norm for layer in model.layers
                if isinstance(layer, MixAttention) and layer.sr_ratio > 1]
  # Per stage: patch embedding and final norm; per block: two; a reduction in stages 1-3.
  assert len(norms) == 4 * 2 + 5 * 2 and len(reductions) == 1 + 2 + 1
  assert [v.path for v in spared] == [v.path for v in model.trainable_variables
                                      if any(v is w for layer in norms + reductions
                                             for w in layer.weights)]
  assert tfdaseg.models.no_decay_variables(model_helpers.tiny_generator()) == []


def test_mixed_bfloat16_forward_and_gradients(mixed_bfloat16):
  model = _tiny(bn_mode="train")
  with tf.GradientTape() as tape:
    out = model(model_helpers.random_image(37, 53, batch=2), training=True)
    loss = tf.reduce_mean(tf.cast(out["logits"], tf.float32) ** 2)
  assert out["logits"].dtype == tf.bfloat16
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads), [v.path for v, g in
                                              zip(model.trainable_variables, grads) if g is None]
  assert np.isfinite(loss.numpy())


def test_unknown_encoder_option_is_refused():
  with pytest.raises(ValueError, match=r"unknown encoder_options \['widths'\]; known: "
                                       "embed_dims, num_heads"):
    tfdaseg.models.build("daformer_mit_b0", encoder_options={"widths": [1, 2, 3, 4]})


def test_dacs_with_feature_distance_trains_and_resumes(tmp_path):
  # Single-level (no aux_logits); the feature distance on every class of the random labels.
  model = training_helpers.tiny_model(
      "dacs", generator="daformer_mit_b0", lambda_seg=0, feature_distance_weight=0.005,
      feature_distance_classes=(0, 1), feature_distance_min_ratio=0.0)
  teacher = model.networks["teacher"]
  assert all(layer.rate == 0.0 for layer in teacher.layers if isinstance(layer, DropPath))
  assert any(layer.rate > 0.0 for layer in model.generator.layers if isinstance(layer, DropPath))
  arrays = method_helpers.method_arrays(model.method)
  logs = model.train_step(method_helpers.batch_of(arrays, [0, 1]))
  assert {"loss/feature_distance", "loss/mix_main"} <= set(logs), logs
  assert all(np.isfinite(float(v)) for v in logs.values()), logs
  # Restored from its checkpoint, the model takes the next step again exactly as before: no
  # random state outside the checkpoint (one model, so the step is traced once).
  checkpoint = tf.train.Checkpoint(**model.trackables())
  path = checkpoint.write(str(tmp_path / "ckpt"))
  batch = method_helpers.batch_of(arrays, [2, 3])
  second = model.train_step(batch)
  after = training_helpers.weights(model)
  checkpoint.read(path).assert_existing_objects_matched()
  again = model.train_step(batch)
  assert float(again["loss/feature_distance"]) == float(second["loss/feature_distance"]) > 0
  training_helpers.assert_weights_close(training_helpers.weights(model), after, atol=0)
