"""Scale, crop and flip augmentation: DAFormer's cat_max_ratio crop, and the crop without it."""

import numpy as np
import pytest
import tensorflow as tf

from tfdaseg.data import augment as augment_lib
from tfdaseg.data import labels

SIZE = 48  # label height and width
CROP = 16
RATIO = 0.75  # lhoyer/DAFormer configs/_base_/datasets/uda_gta_to_cityscapes_512x512.py
SEEDS = range(40)


def block_label(fill: int = 0, block: int = 3, block_size: int = 12) -> np.ndarray:
  """`fill` everywhere except a block_size square of `block` at the top left, and ignore rows."""
  label = np.full((SIZE, SIZE, 1), fill, np.uint8)
  label[:block_size, :block_size] = block
  label[-4:] = labels.IGNORE_ID  # ignored pixels must not count for either class
  return label


def index_image() -> np.ndarray:
  """Channel 0 holds each pixel's flat index, so a crop's pixels say where it came from."""
  index = np.arange(SIZE * SIZE, dtype=np.float32).reshape(SIZE, SIZE)
  return np.stack([index, -index, np.zeros_like(index)], axis=-1)


def crop_seed_of(seed: int) -> tf.Tensor:
  # augment's per-example split: (scale, crop, flip).
  return tf.random.experimental.stateless_split(tf.constant([seed, 5], tf.int64), 3)[1]


def mmseg_max_ratio_ok(label_crop: np.ndarray, ratio: float) -> bool:
  """lhoyer/DAFormer mmseg/datasets/pipelines/transforms.py RandomCrop's test, verbatim."""
  values, cnt = np.unique(label_crop, return_counts=True)
  cnt = cnt[values != labels.IGNORE_ID]
  return len(cnt) > 1 and np.max(cnt) / np.sum(cnt) < ratio


def mmseg_choice(candidate_crops: list[np.ndarray], ratio: float) -> int:
  """RandomCrop.__call__'s loop over pre-drawn candidates: which one it keeps."""
  draws = iter(range(len(candidate_crops)))
  chosen = next(draws)
  for _ in range(10):
    if mmseg_max_ratio_ok(candidate_crops[chosen], ratio):
      break
    chosen = next(draws)
  return chosen


def candidate_crops(label: np.ndarray, seed: int) -> list[np.ndarray]:
  seeds = augment_lib.crop_candidate_seeds(crop_seed_of(seed))
  return [tf.image.stateless_random_crop(label, [CROP, CROP, 1], s).numpy() for s in seeds]


def run(label: np.ndarray, seed: int, **fields) -> tuple[np.ndarray, np.ndarray]:
  config = augment_lib.AugmentConfig(crop_size=(CROP, CROP), **fields)
  image, out = augment_lib.augment(tf.constant(index_image()), tf.constant(label),
                                   tf.constant([seed, 5]), config)
  return image.numpy(), out.numpy()


def assert_aligned(image: np.ndarray, label_crop: np.ndarray, label: np.ndarray):
  """The label crop is the label at the image crop's pixels."""
  rows, cols = np.divmod(image[..., 0].astype(np.int64), SIZE)
  np.testing.assert_array_equal(label_crop[..., 0], label[rows, cols, 0])


def test_candidates_are_eleven_seeds_starting_with_the_crop_seed():
  seed = crop_seed_of(3)
  seeds = augment_lib.crop_candidate_seeds(seed).numpy()
  assert seeds.shape == (augment_lib.CAT_MAX_RATIO_CHECKS + 1, 2)
  np.testing.assert_array_equal(seeds[0], seed.numpy())
  assert len({tuple(s) for s in seeds}) == len(seeds)


def test_cat_max_ratio_follows_mmseg_random_crop():
  label = block_label()
  kept_first = kept_later = kept_last_unchecked = 0
  for seed in SEEDS:
    crops = candidate_crops(label, seed)
    chosen = mmseg_choice(crops, RATIO)
    image, out = run(label, seed, cat_max_ratio=RATIO)
    np.testing.assert_array_equal(out, crops[chosen])
    assert_aligned(image, out, label)
    if any(mmseg_max_ratio_ok(c, RATIO) for c in crops[:10]):
      assert mmseg_max_ratio_ok(out, RATIO)  # a balanced crop existed, so one was taken
    kept_first += chosen == 0
    kept_later += 0 < chosen < 10
    kept_last_unchecked += chosen == 10
  # The label makes every branch happen among the seeds: first taken, re-drawn, 11th kept.
  assert kept_first and kept_later and kept_last_unchecked


def test_cat_max_ratio_balances_crops_that_plain_crops_do_not():
  label = block_label()
  plain = [mmseg_max_ratio_ok(run(label, s)[1], RATIO) for s in SEEDS]
  ratio = [mmseg_max_ratio_ok(run(label, s, cat_max_ratio=RATIO)[1], RATIO) for s in SEEDS]
  assert sum(ratio) > 2 * sum(plain)
  # Without cat_max_ratio the crop is candidate 0, whatever its balance.
  for seed in SEEDS[:8]:
    np.testing.assert_array_equal(run(label, seed)[1], candidate_crops(label, seed)[0])


def augment_before_cat_max_ratio(image, label, seed, config):
  """tfdaseg/data/augment.py `augment` before cat_max_ratio (commit dd2d87d), verbatim."""
  scale_seed, crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3))
  height, width = image.shape[0], image.shape[1]
  if config.crop_size is not None:
    width, height = config.crop_size
  size = tf.shape(image)[:2]
  if config.max_scale != 1.0 or config.min_scale != 1.0:
    scale = tf.random.stateless_uniform([], scale_seed, config.min_scale, config.max_scale)
    size = tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, size, method="bilinear")
    label = tf.image.resize(label, size, method="nearest")
  pad_h = tf.maximum(height - size[0], 0)
  pad_w = tf.maximum(width - size[1], 0)
  image = tf.pad(image, [[0, pad_h], [0, pad_w], [0, 0]])
  label = tf.pad(tf.cast(label, tf.int32) - labels.IGNORE_ID, [[0, pad_h], [0, pad_w], [0, 0]])
  label = label + labels.IGNORE_ID
  stacked = tf.concat([image, tf.cast(label, tf.float32)], axis=-1)
  stacked = tf.image.stateless_random_crop(stacked, [height, width, 4], crop_seed)
  if config.hflip:
    stacked = tf.image.stateless_random_flip_left_right(stacked, flip_seed)
  return stacked[..., :3], tf.cast(stacked[..., 3:], tf.uint8)


@pytest.mark.parametrize("fields", [
    {"crop_size": (CROP, CROP)},
    {"crop_size": (20, 12), "min_scale": 0.25, "max_scale": 2.0, "hflip": True},
    {"min_scale": 0.5, "max_scale": 1.5, "hflip": True},
])
def test_without_cat_max_ratio_output_is_bit_identical_to_before(fields):
  rng = np.random.default_rng(0)
  image = tf.constant(rng.normal(size=(SIZE, SIZE, 3)).astype(np.float32))
  label = tf.constant(rng.integers(0, 20, (SIZE, SIZE, 1)).astype(np.uint8))
  config = augment_lib.AugmentConfig(**fields)
  for seed in range(6):
    seed = tf.constant([seed, 9])
    new, before = (augment_lib.augment(image, label, seed, config),
                   augment_before_cat_max_ratio(image, label, seed, config))
    for got, want in zip(new, before):
      assert got.dtype == want.dtype
      np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_cat_max_ratio_is_deterministic_and_the_same_in_a_dataset_map():
  label = block_label()
  config = augment_lib.AugmentConfig(crop_size=(CROP, CROP), cat_max_ratio=RATIO, hflip=True)
  seeds = tf.constant([[s, 5] for s in SEEDS])
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda seed: augment_lib.augment(tf.constant(index_image()), tf.constant(label), seed,
                                       config))
  graph = [image.numpy() for image, _ in ds]
  eager = [run(label, s, cat_max_ratio=RATIO, hflip=True)[0] for s in SEEDS]
  again = [run(label, s, cat_max_ratio=RATIO, hflip=True)[0] for s in SEEDS]
  for a, b, c in zip(graph, eager, again):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, c)
  assert len({a.tobytes() for a in graph}) > len(graph) // 2  # seeds still vary the crop


@pytest.mark.parametrize("label", [
    np.full((SIZE, SIZE, 1), labels.IGNORE_ID, np.uint8),  # nothing counted
    np.full((SIZE, SIZE, 1), 7, np.uint8),  # one class
    block_label(fill=labels.IGNORE_ID),  # one class among ignored pixels
], ids=["all_ignore", "single_class", "single_class_and_ignore"])
def test_unbalanceable_labels_keep_the_last_candidate(label):
  for seed in range(4):
    image, out = run(label, seed, cat_max_ratio=RATIO)
    assert out.shape == (CROP, CROP, 1)
    np.testing.assert_array_equal(out, candidate_crops(label, seed)[-1])
    want_image = tf.image.stateless_random_crop(
        index_image(), [CROP, CROP, 3], augment_lib.crop_candidate_seeds(crop_seed_of(seed))[-1])
    np.testing.assert_array_equal(image, want_image.numpy())


def test_ignore_pixels_do_not_count():
  crop = np.full((CROP, CROP, 1), labels.IGNORE_ID, np.int32)
  crop[0, :3] = 1  # 3 of class 1, 2 of class 2: 0.6 of the counted pixels
  crop[1, :2] = 2
  assert bool(augment_lib.crop_is_balanced(tf.constant(crop), 0.75))
  assert not bool(augment_lib.crop_is_balanced(tf.constant(crop), 0.6))  # strictly below
  crop[1, :2] = 1
  assert not bool(augment_lib.crop_is_balanced(tf.constant(crop), 0.75))


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_cat_max_ratio_outside_zero_one_is_refused(ratio):
  with pytest.raises(ValueError, match="cat_max_ratio"):
    augment_lib.AugmentConfig.from_value({"crop_size": [8, 8], "cat_max_ratio": ratio})


def test_cat_max_ratio_parses_from_json_fields():
  config = augment_lib.AugmentConfig.from_value({"crop_size": [8, 8], "cat_max_ratio": 0.75})
  assert config.cat_max_ratio == 0.75 and config.crop_size == (8, 8)
  assert augment_lib.AugmentConfig().cat_max_ratio is None
