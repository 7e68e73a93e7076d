"""SLIC superpixels as an example feature: the segments, and the pipeline that carries them."""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import training as helpers
from tfdaseg.data import labels, pipeline, preprocessing
from tfdaseg.data.augment import AugmentConfig
from tfdaseg.data.superpixels import SUPERPIXELS, SlicSuperpixels, slic_segments
from tfdaseg.utils.config_fields import ConfigError


def two_colour_image(height: int = 24, width: int = 40) -> np.ndarray:
  """uint8 RGB: red on the left, blue on the right of column width // 2 - 3, a little noise."""
  rng = np.random.default_rng(0)
  image = np.zeros((height, width, 3), np.float32)
  image[:, : width // 2 - 3] = (200, 30, 30)
  image[:, width // 2 - 3:] = (30, 30, 200)
  return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


def test_segments_follow_the_colour_edge_and_are_numbered_from_0():
  image = two_colour_image()
  ids = slic_segments(image, num_segments=8, compactness=10.0, max_segments=16)
  assert ids.shape == image.shape[:2] and ids.dtype == np.int32
  np.testing.assert_array_equal(np.unique(ids), np.arange(ids.max() + 1))
  assert ids.max() >= 3  # several segments per side, not one per colour
  edge = image.shape[1] // 2 - 3
  assert not set(np.unique(ids[:, :edge])) & set(np.unique(ids[:, edge:]))
  # Ids past the table are merged into its last id.
  assert slic_segments(image, num_segments=8, compactness=10.0, max_segments=2).max() == 1


def test_the_feature_reads_the_preprocessed_image_at_its_downsampled_size():
  image = two_colour_image()
  feature = SlicSuperpixels(num_segments=4, downsample=4)
  ids = feature({"image": preprocessing.caffe_preprocess(tf.constant(image))})
  assert ids.dtype == tf.int32 and tuple(ids.shape) == (6, 10)
  small = tf.cast(tf.round(tf.image.resize(image, (6, 10), method="area")), tf.uint8).numpy()
  np.testing.assert_array_equal(ids.numpy(), slic_segments(small, 4, 10.0, 8))
  assert SlicSuperpixels(downsample=1)({"image": tf.zeros([5, 7, 3])}).shape == (5, 7)
  with pytest.raises(ConfigError, match="num_segments"):
    SlicSuperpixels(num_segments=0)


def test_training_batches_carry_the_superpixels_of_their_augmented_images(tmp_path):
  patterns = helpers.write_tiny_tfrecords(str(tmp_path))
  feature = SlicSuperpixels(num_segments=6, downsample=2)
  parser = pipeline.Parser(labels.get_class_set("19"), (32, 24), pipeline.SAME,
                           augment=AugmentConfig.from_value({"crop_size": [16, 12], "hflip": True}),
                           features=(feature,))
  dataset = pipeline.make_aligned_dataset([patterns["source_train"]], [parser], batch_size=2,
                                          training=True, seed=3)
  (batch,) = next(iter(dataset))
  assert batch[SUPERPIXELS].dtype == tf.int32 and tuple(batch[SUPERPIXELS].shape) == (2, 6, 8)
  for image, ids in zip(batch["image"], batch[SUPERPIXELS]):
    np.testing.assert_array_equal(ids.numpy(), feature({"image": image}).numpy())
