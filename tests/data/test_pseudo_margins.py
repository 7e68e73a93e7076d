"""HRDA's pseudo-label margins: a mask drawn on the whole image, moved with the crop and flip."""

import numpy as np
import pytest
import tensorflow as tf

from tfdaseg.data import augment as augment_lib
from tfdaseg.data import labels, pipeline

HEIGHT, WIDTH = 24, 40
MARGINS = (3, 7, 5, 2)  # top, bottom, left, right


def hrda_valid_pseudo_mask(height: int, width: int, margins) -> np.ndarray:
  """lhoyer/HRDA mmseg/datasets/cityscapes.py `pre_pipeline`, transcribed."""
  mask = np.ones([height, width], dtype=np.uint8)
  if margins[0] > 0:
    mask[:margins[0], :] = 0
  if margins[1] > 0:
    mask[-margins[1]:, :] = 0
  if margins[2] > 0:
    mask[:, :margins[2]] = 0
  if margins[3] > 0:
    mask[:, -margins[3]:] = 0
  return mask


def index_image() -> np.ndarray:
  """Channel 0 holds each pixel's flat index, so a crop's pixels say where they came from."""
  index = np.arange(HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
  return np.stack([index, np.zeros_like(index), np.zeros_like(index)], axis=-1)


def label_image() -> np.ndarray:
  return (np.arange(HEIGHT * WIDTH) % 19).reshape(HEIGHT, WIDTH, 1).astype(np.uint8)


@pytest.mark.parametrize("margins", [MARGINS, (0, 0, 0, 0), (30, 0, 0, 30)])
@pytest.mark.parametrize("crop", [(16, 16), (WIDTH, HEIGHT), (12, 20)])
def test_the_mask_is_hrdas_mask_at_the_cropped_and_flipped_pixels(margins, crop):
  config = augment_lib.AugmentConfig(crop_size=crop, hflip=True, pseudo_margins=margins)
  full = hrda_valid_pseudo_mask(HEIGHT, WIDTH, margins)
  for seed in range(8):
    image, _, mask = augment_lib.augment_with_pseudo_mask(
        tf.constant(index_image()), tf.constant(label_image()), tf.constant([seed, 3]), config)
    assert mask.shape == (crop[1], crop[0]) and mask.dtype == tf.float32
    rows, cols = np.divmod(image.numpy()[..., 0].astype(np.int64), WIDTH)
    np.testing.assert_array_equal(mask.numpy(), full[rows, cols])


def test_margins_change_neither_the_crop_nor_the_label():
  plain = augment_lib.AugmentConfig(crop_size=(16, 16), hflip=True, min_scale=0.5, max_scale=2.0)
  masked = augment_lib.AugmentConfig(crop_size=(16, 16), hflip=True, min_scale=0.5,
                                     max_scale=2.0, pseudo_margins=MARGINS)
  for seed in range(6):
    args = (tf.constant(index_image()), tf.constant(label_image()), tf.constant([seed, 1]))
    image, label = augment_lib.augment(*args, plain)
    image_m, label_m, mask = augment_lib.augment_with_pseudo_mask(*args, masked)
    np.testing.assert_array_equal(image.numpy(), image_m.numpy())
    np.testing.assert_array_equal(label.numpy(), label_m.numpy())
    assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
  assert augment_lib.augment_with_pseudo_mask(*args, plain)[2] is None


def test_padding_beyond_the_image_is_masked():
  config = augment_lib.AugmentConfig(crop_size=(WIDTH + 8, HEIGHT + 4), pseudo_margins=(0,) * 4)
  _, label, mask = augment_lib.augment_with_pseudo_mask(
      tf.constant(index_image()), tf.constant(label_image()), tf.constant([0, 0]), config)
  padded = label.numpy()[..., 0] == labels.IGNORE_ID
  assert padded.sum() == (WIDTH + 8) * (HEIGHT + 4) - WIDTH * HEIGHT
  np.testing.assert_array_equal(mask.numpy(), (~padded).astype(np.float32))


@pytest.mark.parametrize("margins", [(1, 2, 3), (1, 2, 3, -1), (1.5, 0, 0, 0)])
def test_bad_margins_are_refused(margins):
  with pytest.raises(ValueError, match="pseudo_margins"):
    augment_lib.AugmentConfig.from_value({"pseudo_margins": margins})


def test_margins_parse_from_json_fields_and_reach_the_parsed_example():
  config = augment_lib.AugmentConfig.from_value({"crop_size": [16, 16],
                                                  "pseudo_margins": [3, 7, 5, 2]})
  assert config.pseudo_margins == MARGINS
  parser = pipeline.Parser(labels.get_class_set(19), augment=config)
  example = parser.finish({"image": tf.constant(index_image()),
                           "label": tf.constant(label_image()), "filename": tf.constant("a")},
                          tf.constant([0, 0]))
  assert example[augment_lib.PSEUDO_VALID].shape == (16, 16)
  plain = pipeline.Parser(labels.get_class_set(19),
                          augment=augment_lib.AugmentConfig(crop_size=(16, 16)))
  assert augment_lib.PSEUDO_VALID not in plain.finish(
      {"image": tf.constant(index_image()), "label": tf.constant(label_image()),
       "filename": tf.constant("a")}, tf.constant([0, 0]))
