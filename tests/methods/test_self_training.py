"""Self-training pieces: ClassMix, quality weight, ignored rows, MIC masks, feature distance, and
DACS's mixed batch."""

import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests.helpers import training as helpers
from tfdaseg import methods
from tfdaseg.data.augment import PSEUDO_VALID
from tfdaseg.methods import mean_teacher, self_training
from tfdaseg.methods.base import TARGET, StepContext
from tfdaseg.models import outputs
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.training import config as train_config
from tfdaseg.utils.config_fields import ConfigError

IGNORE = 255
CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "configs", "gta5_to_cityscapes", "dacs.cfg")


def labels_with_classes(classes_per_image, size=16, seed=0):
  """[B, size, size] int32 labels, image b holding exactly classes_per_image[b] (255 too)."""
  rng = np.random.default_rng(seed)
  images = []
  for classes in classes_per_image:
    label = np.array(classes * (size * size // len(classes) + 1))[:size * size]
    images.append(rng.permutation(label).reshape(size, size))
  return np.stack(images).astype(np.int32)


def test_classmix_pastes_half_of_each_images_classes_as_whole_classes():
  num_classes = 6
  per_image = [[0, 1, 2], [3, 4, 5, IGNORE], [2], [0, 1, 2, 3, 4]]
  labels = labels_with_classes(per_image)
  seen = set()
  for seed in range(8):
    masks = self_training.classmix_masks(tf.constant(labels), tf.constant([seed, 1]),
                                         num_classes).numpy()
    for label, mask, classes in zip(labels, masks, per_image):
      pasted = set(np.unique(label[mask]).tolist())
      assert pasted <= set(classes)
      assert len(pasted) == (len(classes) + len(classes) % 2) // 2
      # Whole classes: every pixel of a pasted class is pasted, none of the others.
      np.testing.assert_array_equal(mask, np.isin(label, list(pasted)))
      seen.add((tuple(classes), tuple(sorted(pasted))))
  # The draw depends on the seed: image 1 got more than one subset over the seeds.
  assert len({p for c, p in seen if c == (3, 4, 5, IGNORE)}) > 1


def test_classmix_subsets_are_uniform():
  # 4 classes, 2 pasted: each of the 6 pairs with probability 1/6 (chi-square, fixed seeds).
  labels = labels_with_classes([[0, 1, 2, 3]] * 600, size=4)
  masks = self_training.classmix_masks(tf.constant(labels), tf.constant([3, 4]), 4).numpy()
  pairs = [tuple(sorted(set(np.unique(l[m]).tolist()))) for l, m in zip(labels, masks)]
  counts = np.array([pairs.count(p) for p in sorted(set(pairs))])
  assert len(counts) == 6
  chi_square = float(np.sum((counts - 100.0) ** 2 / 100.0))
  assert chi_square < 20.5  # p = 0.001 at 5 degrees of freedom


def test_quality_weight_matches_a_hand_count():
  probabilities = np.array([[[0.99, 0.5], [0.968, 0.1]], [[0.97, 0.97], [0.2, 0.3]]], np.float32)
  batch = self_training.quality_weight(tf.constant(probabilities), 0.968).numpy()
  np.testing.assert_allclose(batch, np.full((2, 2, 2), 4 / 8))
  image = self_training.quality_weight(tf.constant(probabilities), 0.968, "image").numpy()
  np.testing.assert_allclose(image[0], np.full((2, 2), 2 / 4))
  np.testing.assert_allclose(image[1], np.full((2, 2), 2 / 4))
  image = self_training.quality_weight(tf.constant(probabilities), 0.98, "image").numpy()
  np.testing.assert_allclose(image[:, 0, 0], [1 / 4, 0])


def test_ignored_rows_scale_with_the_height():
  weights = tf.ones([1, 256, 4])
  kept = self_training.ignore_rows(weights, top=15, bottom=120).numpy()[0, :, 0]
  # 15 and 120 rows at 512 rows are 8 (7.5 rounded to even) and 60 at 256.
  assert self_training.scaled_rows(15, 256) == 8
  np.testing.assert_array_equal(np.flatnonzero(kept == 0),
                                np.r_[np.arange(8), np.arange(256 - 60, 256)])


def test_mic_mask_ratio_and_blocks():
  mask = self_training.block_mask(4, 256, 512, tf.constant([5, 6]), 32, 0.7).numpy()
  assert mask.shape == (4, 256, 512)
  assert set(np.unique(mask)) <= {0.0, 1.0}
  cells = mask[:, ::32, ::32]
  # Constant within each 32x32 cell.
  np.testing.assert_array_equal(np.repeat(np.repeat(cells, 32, 1), 32, 2), mask)
  # 512 cells, masked with probability 0.7: 0.7 +- 4.5 standard deviations.
  assert abs((1 - cells.mean()) - 0.7) < 4.5 * np.sqrt(0.21 / cells.size)


def dacs_context(arrays, seed=(1, 2)):
  """A step context over the first two examples with a tiny DACS model's networks."""
  model = helpers.tiny_model("dacs")
  batch = {stream: {k: tf.constant(v[:2]) for k, v in data.items() if k != "filename"}
           for stream, data in arrays.items()}
  return StepContext(batch, model.all_networks(), helpers.NUM_CLASSES,
                     tf.constant(0, tf.int64), tf.constant(seed, tf.int32))


def test_dacs_mixes_labels_pseudo_labels_and_weights_with_one_mask():
  method = helpers.tiny_method("dacs", pseudo_threshold=0.4, blur=False,
                               color_jitter_probability=1.0)
  arrays = helpers.stream_arrays(count=2)
  ctx = dacs_context(arrays)
  images, labels, weights = (t.numpy() for t in method.mixed_batch(ctx))
  source, target = arrays["source"], arrays["target"]
  mask = self_training.classmix_masks(tf.constant(source["label"]), ctx.seed_for("classmix"),
                                      helpers.NUM_CLASSES).numpy()
  assert 0 < mask.mean() < 1
  teacher = ctx.networks["teacher"](tf.constant(target["image"]), training=True)
  logits = upsample_bilinear(teacher[outputs.LOGITS], [32, 32]).numpy()
  probabilities = tf.nn.softmax(logits).numpy()
  quality = np.mean(probabilities.max(-1) >= 0.4)
  np.testing.assert_array_equal(labels, np.where(mask, source["label"], logits.argmax(-1)))
  # The source's ignored rows (0, 1) stay ignored where pasted.
  assert np.all(labels[:, :2][mask[:, :2]] == IGNORE)
  np.testing.assert_allclose(weights, np.where(mask, 1.0, quality), rtol=1e-6)
  # Without jitter and blur the mixed image is the mix itself.
  np.testing.assert_allclose(images, np.where(mask[..., None], source["image"], target["image"]),
                             atol=1e-4)


def test_dacs_refuses_streams_of_different_sizes():
  def validate(*argv):
    fv = flags.FlagValues()
    train_config.define_flags(fv)
    fv(["train", f"--flagfile={CONFIG}", *argv])
    train_config.validate(train_config.TrainConfig.from_flags(fv), require_model_dir=False)

  validate()  # 512x512 crops of both
  with pytest.raises(ConfigError, match=r"mixes the streams \['source', 'target'\].*"
                                        r"\(512, 512\).*\(400, 512\)"):
    validate('--target_augment={"crop_size": [400, 512]}')


def test_pseudo_labels_are_the_teachers_argmax_with_ignored_rows():
  method = methods.build("dacs", num_classes=helpers.NUM_CLASSES, pseudo_ignore_top=64,
                         pseudo_threshold=0.0)
  ctx = dacs_context(helpers.stream_arrays(count=2))
  labels, weights = (t.numpy() for t in mean_teacher.teacher_pseudo_labels(ctx, method.config))
  assert labels.shape == (2, 32, 32) and labels.max() < helpers.NUM_CLASSES
  # 64 rows at 512 are 4 rows at 32; threshold 0: every other pixel is confident.
  np.testing.assert_array_equal(weights[:, :4], 0)
  np.testing.assert_array_equal(weights[:, 4:], 1)


def test_pseudo_label_weights_are_zero_in_the_target_streams_margin_mask():
  method = methods.build("dacs", num_classes=helpers.NUM_CLASSES, pseudo_threshold=0.0)
  ctx = dacs_context(helpers.stream_arrays(count=2))
  valid = np.ones([2, 32, 32], np.float32)
  valid[0, :3], valid[0, -5:], valid[0, :, :2] = 0, 0, 0  # HRDA's margins, on image 0 only
  ctx.batch[TARGET][PSEUDO_VALID] = tf.constant(valid)
  _, weights = mean_teacher.teacher_pseudo_labels(ctx, method.config)
  # Threshold 0: every pixel is confident, so the weights are the mask.
  np.testing.assert_array_equal(weights.numpy(), valid)


@pytest.mark.parametrize("method", ["adaptsegnet", "dacs"])
def test_mic_adds_its_loss_on_the_teachers_pseudo_labels(method):
  assert "teacher" not in helpers.tiny_method("adaptsegnet").networks()
  model = helpers.tiny_model(method, mic=True, mic_block_size=8, pseudo_threshold=0.0)
  assert set(model.networks) >= {"teacher"}
  arrays = helpers.stream_arrays(count=2)
  batch = {stream: {k: tf.constant(v) for k, v in data.items() if k != "filename"}
           for stream, data in arrays.items()}
  ctx = StepContext(batch, model.all_networks(), helpers.NUM_CLASSES, tf.constant(0, tf.int64),
                    tf.constant([0, 0]))
  losses_by_name = model.method.adaptation_objective(ctx).losses
  # Threshold 0: every pseudo-label weighs 1, so the masked images' CE is a positive loss.
  assert float(losses_by_name["mic_main"][1]) > 0
  assert "mic_aux" in losses_by_name  # lambda_seg 0.1 on the multi-level tiny model


def numpy_downscale_label_ratio(labels, scale, min_ratio, num_classes):
  """DAFormer's downscale_label_ratio, loops over cells."""
  b, h, w = labels.shape
  out = np.full((b, h // scale, w // scale), IGNORE)
  for i in range(b):
    for y in range(h // scale):
      for x in range(w // scale):
        cell = labels[i, y * scale:(y + 1) * scale, x * scale:(x + 1) * scale].ravel()
        cell = np.where(cell == IGNORE, num_classes, cell)
        counts = np.bincount(cell, minlength=num_classes + 1) / cell.size
        if counts.max() >= min_ratio and counts.argmax() != num_classes:
          out[i, y, x] = counts.argmax()
  return out


def test_feature_distance_pieces_match_numpy():
  rng = np.random.default_rng(0)
  # Blocky labels, so that many cells hold one class.
  labels = np.repeat(np.repeat(rng.integers(0, 4, (2, 6, 5)), 4, 1), 4, 2)
  labels[:, :5, :3] = IGNORE
  labels[0, 0:8:3, 0:20:3] = 2  # mixed cells
  cells = self_training.downscale_label_ratio(tf.constant(labels), 4, 0.75, 4).numpy()
  np.testing.assert_array_equal(cells, numpy_downscale_label_ratio(labels, 4, 0.75, 4))
  assert (cells == IGNORE).any() and (cells != IGNORE).any()
  student, reference = rng.normal(size=(2, 2, 6, 5, 8)).astype(np.float32)
  mask = np.isin(cells, [1, 3])
  expected = np.linalg.norm(student - reference, axis=-1)[mask].mean()
  distance = self_training.masked_feature_distance(tf.constant(student), tf.constant(reference),
                                                   tf.constant(mask))
  assert float(distance) == pytest.approx(expected, rel=1e-5)
  # Equal features: distance 0 and a zero (not NaN) gradient.
  same = tf.Variable(student)
  with tf.GradientTape() as tape:
    zero = self_training.masked_feature_distance(same, tf.constant(student), tf.constant(mask))
  assert float(zero) == pytest.approx(1e-6, abs=1e-6)
  assert np.all(np.isfinite(tape.gradient(zero, same).numpy()))
