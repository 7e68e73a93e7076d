"""The training model: the reference update order, accumulation, methods, precision, XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import training as helpers
from tfdaseg import methods
from tfdaseg.methods import gan_losses
from tfdaseg.methods import losses
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.training.model import build_networks
from tfdaseg.utils.config_fields import ConfigError


STEP, SEED = tf.constant(0, tf.int64), tf.constant([0, 0], tf.int32)


def batch_of(arrays, indices):
  return {stream: {k: tf.constant(v[indices]) for k, v in data.items() if k != "filename"}
          for stream, data in arrays.items()}


def reference_gradients(model, batch):
  """AdaptSegNet multi-level step written out the reference's way: the generator's gradient from
  CE(main) + 0.1 CE(aux) + adversarial terms (target vs source label), each discriminator's from
  its own loss on detached maps only."""
  g, ds = model.generator, model.networks
  cfg = model.method.config
  bce = lambda logits, label: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
      tf.fill(tf.shape(logits), label), logits))
  def softmax_maps(out, image):
    size = tf.shape(image)[1:3]
    return {level: tf.nn.softmax(upsample_bilinear(out[key], size))
            for level, key in (("aux", "aux_logits"), ("main", "logits"))}
  with tf.GradientTape() as tape:
    src = g(batch["source"]["image"], training=True)
    tgt = g(batch["target"]["image"], training=True)
    label = batch["source"]["label"]
    seg = (losses.segmentation_loss(src["logits"], label, helpers.NUM_CLASSES)
           + cfg.lambda_seg * losses.segmentation_loss(src["aux_logits"], label,
                                                       helpers.NUM_CLASSES))
    tgt_maps = softmax_maps(tgt, batch["target"]["image"])
    adv = (cfg.lambda_adv_target1 * bce(ds["aux"](tgt_maps["aux"]), 0.0)
           + cfg.lambda_adv_target2 * bce(ds["main"](tgt_maps["main"]), 0.0))
    generator_loss = seg + adv
  generator_gradients = tape.gradient(generator_loss, g.trainable_variables)
  src_maps = softmax_maps(src, batch["source"]["image"])
  discriminator_gradients = {}
  for level, d in ds.items():
    with tf.GradientTape() as tape:
      loss = (bce(d(src_maps[level]), 0.0) / 2 + bce(d(tgt_maps[level]), 1.0) / 2)
    discriminator_gradients[level] = tape.gradient(loss, d.trainable_variables)
  return generator_gradients, discriminator_gradients


def assert_gradients_close(actual, expected):
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert (a is None) == (e is None)
    if a is not None:
      np.testing.assert_allclose(a, e, rtol=2e-4, atol=1e-6)


def test_gradients_follow_the_reference_order_and_detachment():
  arrays = helpers.stream_arrays(count=2)
  model = helpers.tiny_model("adaptsegnet", lambda_adv_target1=0.5, lambda_adv_target2=1.0)
  batch = batch_of(arrays, [0])
  generator_gradients, discriminator_gradients, logs = model._gradients(batch, 1.0, STEP, SEED)
  expected_generator, expected_discriminators = reference_gradients(model, batch)
  assert_gradients_close(generator_gradients, expected_generator)
  for level in ("aux", "main"):
    assert_gradients_close(discriminator_gradients[level], expected_discriminators[level])
  assert {"loss/seg_main_source", "loss/seg_aux_source", "loss/adv_aux", "loss/adv_main",
          "loss/d_main_source", "loss/d_main_target", "metric/d_accuracy_main"} <= set(logs)


def test_iter_size_accumulates_like_a_larger_batch():
  # Frozen BatchNorm and equal labelled-pixel counts: two sub-batches of one image must give the
  # update of one batch of two.
  arrays = helpers.stream_arrays(count=2)
  accumulated = helpers.tiny_model("adaptsegnet")
  batched = helpers.tiny_model("adaptsegnet")
  helpers.assert_weights_close(helpers.weights(accumulated), helpers.weights(batched), atol=0)
  accumulated.train_step((batch_of(arrays, [0]), batch_of(arrays, [1])))
  batched.train_step(batch_of(arrays, [0, 1]))
  moved = helpers.weights(accumulated)
  assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(moved, helpers.weights(
      helpers.tiny_model("adaptsegnet"))))
  # float32 sums in another order: seen up to 2.4e-6 on weights of ~1e-2 on AMD EPYC CPUs.
  helpers.assert_weights_close(moved, helpers.weights(batched), atol=5e-6)


# case -> (method, options, discriminators, log keys that must appear).
METHOD_CASES = {
    "source_only": ("source_only", {}, set(), {"loss/seg_main_source", "loss/seg_aux_source"}),
    "target_only": ("target_only", {}, set(), {"loss/seg_main_target", "loss/seg_aux_target"}),
    "adaptsegnet_single": ("adaptsegnet", {"levels": "single", "lambda_seg": 0.0}, {"main"},
                           {"loss/seg_main_source", "loss/adv_main", "loss/d_main_target"}),
    "adaptsegnet_feature_ls": ("adaptsegnet", {"adapt_space": "feature", "gan": "ls"},
                               {"aux", "main"}, {"loss/adv_aux", "loss/d_aux_source"}),
    "advent_minent": ("advent", {"advent_mode": "minent"}, set(),
                      {"loss/ent_aux", "loss/ent_main"}),
    "advent_both": ("advent", {"advent_mode": "both"}, {"aux", "main"},
                    {"loss/ent_main", "loss/adv_main", "loss/d_aux_target"}),
}


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_every_method_trains_a_step(case):
  method, options, discriminators, expected_logs = METHOD_CASES[case]
  model = helpers.tiny_model(method, **options)
  assert set(model.networks) == discriminators
  before = helpers.weights(model)
  target_labelled = helpers.stream_arrays(count=1)
  target_labelled["target"]["label"] = target_labelled["source"]["label"]
  logs = model.train_step(batch_of(target_labelled, [0]))
  assert expected_logs <= set(logs)
  assert all(np.isfinite(float(v)) for v in logs.values())
  changed = [np.abs(a - b).max() > 0 for a, b in zip(helpers.weights(model), before)]
  assert any(changed)


def test_feature_discriminators_read_the_feature_maps():
  model = helpers.tiny_model("adaptsegnet", adapt_space="feature")
  channels = {level: d.input_shape[-1] for level, d in model.networks.items()}
  outputs = model.generator.output
  assert channels == {"main": outputs["features"].shape[-1],
                      "aux": outputs["aux_features"].shape[-1]}


def test_multi_level_method_on_a_single_level_model_is_refused():
  generator = helpers.tiny_generator("deeplab_v2_resnet101_single", num_classes=3)
  method = methods.build("adaptsegnet", num_classes=3)
  with pytest.raises(ValueError, match="aux_logits"):
    build_networks(method, generator, 3, lambda *a, **k: None)


def test_unknown_method_options_are_refused():
  for options in ({"levels": "triple"}, {"gan": "wasserstein"}, {"adapt_space": "pixel"}):
    with pytest.raises(ConfigError, match="known: "):
      methods.build("adaptsegnet", num_classes=3, **options)
  with pytest.raises(KeyError, match="known: adaptsegnet, adaptsegnet_ssl, advent"):
    methods.build("adaptsegnet_v3", num_classes=3)


def test_gan_losses_and_accuracy():
  logits = tf.constant([[-2.0, 3.0]])
  vanilla, ls = gan_losses.GAN_LOSSES.get("vanilla"), gan_losses.GAN_LOSSES.get("ls")
  expected_bce = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(3.0))])
  assert float(vanilla.loss(logits, 0.0)) == pytest.approx(expected_bce, rel=1e-6)
  assert float(ls.loss(logits, 1.0)) == pytest.approx((9 + 4) / 2)
  assert float(vanilla.accuracy(logits, 1.0)) == 0.5
  assert float(ls.accuracy(tf.constant([0.4, 0.6, 0.9]), 1.0)) == pytest.approx(2 / 3)


@pytest.fixture
def policy():
  yield keras.mixed_precision.set_global_policy
  keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps(policy, precision):
  policy(precision)
  model = helpers.tiny_model("adaptsegnet", precision=precision)
  assert model.generator(tf.zeros([1, 32, 32, 3]))["logits"].dtype != tf.float32
  scaled = isinstance(model.generator_optimizer, keras.optimizers.LossScaleOptimizer)
  assert scaled == (precision == "mixed_float16")
  before = helpers.weights(model)
  logs = model.train_step(batch_of(helpers.stream_arrays(count=1), [0]))
  assert all(v.dtype == tf.float32 and np.isfinite(float(v)) for v in logs.values())
  assert any(np.abs(a - b).max() > 0 for a, b in zip(helpers.weights(model), before))


def test_xla_core_matches_the_plain_one():
  batch = batch_of(helpers.stream_arrays(count=1), [0])
  plain = helpers.tiny_model("adaptsegnet")._gradients(batch, 1.0, STEP, SEED)
  compiled = helpers.tiny_model("adaptsegnet", jit_compile=True)._gradients(batch, 1.0, STEP,
                                                                            SEED)
  assert_gradients_close(compiled[0], plain[0])
  for level in plain[1]:
    assert_gradients_close(compiled[1][level], plain[1][level])
