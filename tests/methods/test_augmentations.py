"""Strong augmentations against independent numpy / scipy / colorsys versions of the references.

References: DAFormer mmseg/models/utils/dacs_transforms.py (kernel size, blur, jitter threshold)
and kornia 0.5.8 (ColorJitter semantics, GaussianBlur2d). The expected values below are computed
from those formulas, not from the implementation.
"""

import colorsys

import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize
import tensorflow as tf

from tfdaseg.data.preprocessing import caffe_preprocess
from tfdaseg.methods import augmentations as aug

SEED = tf.constant([7, 11], tf.int32)
ON = aug.StrongAugmentConfig(color_jitter_probability=0.0, blur_probability=1.0)


def caffe_batch(batch: int, height: int, width: int, low: int = 0, high: int = 256,
                seed: int = 0) -> tf.Tensor:
  """Random uint8-valued RGB images, Caffe-preprocessed as the training step sees them."""
  rgb = np.random.default_rng(seed).integers(low, high, (batch, height, width, 3))
  return caffe_preprocess(rgb.astype(np.float32))


def to_rgb01(images) -> np.ndarray:
  """Independent inverse of the Caffe preprocessing: + BGR mean, BGR -> RGB, / 255."""
  bgr = np.asarray(images, np.float64) + np.array([104.00698793, 116.66876762, 122.67891434])
  return bgr[..., ::-1] / 255.0


def daformer_kernel_size(n: int) -> int:
  # dacs_transforms.py:74-77, verbatim.
  return int(np.floor(np.ceil(0.1 * n) - 0.5 + np.ceil(0.1 * n) % 2))


def numpy_blur(images: np.ndarray, sigmas) -> np.ndarray:
  """kornia GaussianBlur2d with DAFormer's kernel sizes: sampled, normalised Gaussian taps,
  torch "reflect" padding (= scipy's "mirror")."""
  images = np.asarray(images, np.float64)
  out = np.empty_like(images)
  for b, sigma in enumerate(np.broadcast_to(sigmas, images.shape[:1])):
    image = images[b]
    for axis in (0, 1):
      size = daformer_kernel_size(images.shape[axis + 1])
      x = np.arange(size) - size // 2
      taps = np.exp(-x**2 / (2 * sigma**2))
      image = scipy.ndimage.correlate1d(image, taps / taps.sum(), axis=axis, mode="mirror")
    out[b] = image
  return out


def numpy_hsv_map(rgb: np.ndarray, function) -> np.ndarray:
  """Applies `function(h, s, v) -> (h, s, v)` (colorsys units: h in turns) to every pixel."""
  out = np.empty_like(rgb)
  for index in np.ndindex(rgb.shape[:-1]):
    h, s, v = function(*colorsys.rgb_to_hsv(*rgb[index]))
    out[index] = colorsys.hsv_to_rgb(h % 1.0, s, v)
  return out


def numpy_kornia_jitter(rgb: np.ndarray, factors: np.ndarray, order: np.ndarray) -> np.ndarray:
  """kornia 0.5.8 ColorJitter.apply_transform per image: additive brightness (factor - 1),
  multiplicative contrast, HSV saturation and hue (turns), each clamped, in the given order."""
  out = rgb.astype(np.float64).copy()
  for b in range(rgb.shape[0]):
    brightness, contrast, saturation, hue = factors[b]
    steps = {
        0: lambda x: np.clip(x + brightness - 1.0, 0.0, 1.0),
        1: lambda x: np.clip(x * contrast, 0.0, 1.0),
        2: lambda x: numpy_hsv_map(x, lambda h, s, v: (h, min(max(s * saturation, 0.0), 1.0), v)),
        3: lambda x: numpy_hsv_map(x, lambda h, s, v: (h + hue, s, v)),
    }
    for index in order[b]:
      out[b] = steps[int(index)](out[b])
  return out


# --- Gaussian blur ------------------------------------------------------------------------------


def test_kernel_size_is_daformers_formula():
  for n in range(1, 2049):
    assert aug.blur_kernel_size(n) == daformer_kernel_size(n), n
  dynamic = [int(aug.blur_kernel_size(tf.constant(n))) for n in (30, 40, 64, 512, 1024, 2048)]
  assert dynamic == [daformer_kernel_size(n) for n in (30, 40, 64, 512, 1024, 2048)]
  assert (aug.blur_kernel_size(512), aug.blur_kernel_size(1024)) == (51, 103)


@pytest.mark.parametrize("sigma", [0.8, [0.3, 1.1]])
def test_blur_with_sigma_matches_scipy(sigma):
  # H = 40 -> k 3 (ceil even), W = 64 -> k 7 (ceil odd): both branches, different per axis.
  images = caffe_batch(2, 40, 64)
  actual = aug.blur_with_sigma(images, tf.constant(sigma, tf.float32)).numpy()
  expected = numpy_blur(images.numpy(), sigma)
  np.testing.assert_allclose(actual, expected, atol=2e-3)
  assert np.abs(actual - images.numpy()).max() > 10.0  # it does blur


def test_gaussian_blur_draws_a_sigma_in_range_per_image():
  image = caffe_batch(1, 30, 30).numpy()
  images = np.concatenate([image, image])
  out = aug.gaussian_blur(images, SEED, probability=1.0).numpy()
  assert not np.allclose(out[0], out[1])  # per-image sigma
  for b in range(2):
    fit = scipy.optimize.minimize_scalar(
        lambda sigma: np.abs(numpy_blur(image, sigma)[0] - out[b]).max(), bounds=(0.05, 2.0),
        method="bounded", options={"xatol": 1e-6})
    assert fit.fun < 2e-3
    assert 0.15 <= fit.x <= 1.15


def test_blur_probability_zero_and_config_off_leave_images_unchanged():
  images = caffe_batch(2, 20, 20)
  for seed in range(5):
    seed = tf.constant([seed, 3])
    np.testing.assert_array_equal(aug.gaussian_blur(images, seed, probability=0.0), images)
    config = aug.StrongAugmentConfig(color_jitter_probability=1.0, blur=False)
    np.testing.assert_array_equal(aug.strong_augment(images, seed, config), images)


# --- colour jitter ------------------------------------------------------------------------------


def test_rgb_hsv_match_colorsys():
  rgb = np.random.default_rng(1).uniform(size=(2, 5, 6, 3)).astype(np.float32)
  rgb[0, 0, :3] = [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0], [1.0, 0.2, 1.0]]  # grey, black, a tie
  hsv = aug.rgb_to_hsv(rgb).numpy()
  for index in np.ndindex(rgb.shape[:-1]):
    h, s, v = colorsys.rgb_to_hsv(*rgb[index].astype(np.float64))
    np.testing.assert_allclose(hsv[index], [h * 2 * np.pi, s, v], atol=1e-5)
  np.testing.assert_allclose(aug.hsv_to_rgb(hsv).numpy(), rgb, atol=1e-5)


@pytest.mark.parametrize("key,factor", [("brightness", 1.2), ("brightness", 0.8),
                                        ("contrast", 1.3), ("contrast", 0.7),
                                        ("saturation", 1.5), ("saturation", 0.6),
                                        ("hue", 0.2), ("hue", -0.3)])
def test_one_jitter_factor_matches_kornia_formula(key, factor):
  rgb = np.random.default_rng(2).uniform(size=(2, 6, 7, 3)).astype(np.float32)
  factors = np.array([[1.0, 1.0, 1.0, 0.0]] * 2)
  factors[:, aug.JITTER_KEYS.index(key)] = factor
  order = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
  actual = aug.apply_color_jitter(rgb, *tf.unstack(tf.constant(factors, tf.float32), axis=1),
                                  tf.constant(order)).numpy()
  np.testing.assert_allclose(actual, numpy_kornia_jitter(rgb, factors, order), atol=1e-5)


def test_jitter_applies_the_factors_in_each_images_order():
  rgb = np.random.default_rng(3).uniform(size=(3, 5, 5, 3)).astype(np.float32)
  factors = np.array([[1.15, 1.2, 0.8, 0.1], [0.85, 0.9, 1.2, -0.15], [1.1, 1.25, 1.3, 0.05]])
  order = np.array([[0, 1, 2, 3], [1, 3, 0, 2], [3, 2, 1, 0]])
  actual = aug.apply_color_jitter(rgb, *tf.unstack(tf.constant(factors, tf.float32), axis=1),
                                  tf.constant(order)).numpy()
  np.testing.assert_allclose(actual, numpy_kornia_jitter(rgb, factors, order), atol=1e-5)
  # The order matters (brightness then contrast is not contrast then brightness).
  swapped = aug.apply_color_jitter(rgb, *tf.unstack(tf.constant(factors, tf.float32), axis=1),
                                   tf.constant(order[:, [1, 0, 2, 3]])).numpy()
  assert np.abs(swapped - actual).max() > 1e-2


def test_brightness_only_jitter_is_additive_per_image():
  # Mid-range pixels: no clamp at +-0.2, so kornia's additive brightness is a constant shift.
  images = caffe_batch(4, 6, 8, low=70, high=180)
  out = aug.color_jitter(images, SEED, strength={"brightness": 0.2}, probability=0.0)
  shift = to_rgb01(out) - to_rgb01(images)
  per_image = shift.reshape(4, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] + 0 * per_image, atol=2e-5)
  assert np.all(np.abs(per_image[:, 0]) <= 0.2 + 1e-6)
  assert len(set(np.round(per_image[:, 0], 4))) == 4  # drawn per image


def test_jitter_ranges_are_kornias():
  def approx(ranges):
    return {key: pytest.approx(value) for key, value in ranges.items()}

  assert aug.jitter_ranges(0.2) == approx(
      {"brightness": (0.8, 1.2), "contrast": (0.8, 1.2), "saturation": (0.8, 1.2),
       "hue": (-0.2, 0.2)})
  # kornia's clamps: brightness to (0, 2), contrast and saturation to (0, inf), hue to +-0.5.
  assert aug.jitter_ranges(1.5) == approx(
      {"brightness": (0.0, 2.0), "contrast": (0.0, 2.5), "saturation": (0.0, 2.5),
       "hue": (-0.5, 0.5)})
  assert aug.jitter_ranges({"hue": 0.1})["contrast"] == (1.0, 1.0)
  with pytest.raises(ValueError):
    aug.jitter_ranges({"gamma": 0.1})


def test_jitter_parameters_cover_their_ranges_and_all_orders():
  bits = tf.random.stateless_uniform([2000, 5], SEED, minval=None, maxval=None, dtype=tf.uint32)
  factors, order = aug.jitter_parameters(bits, 0.2)
  factors, order = factors.numpy(), order.numpy()
  np.testing.assert_array_less(np.abs(factors - [1.0, 1.0, 1.0, 0.0]), 0.2 + 1e-6)
  assert np.all(np.abs(factors - [1.0, 1.0, 1.0, 0.0]).max(axis=0) > 0.19)
  np.testing.assert_array_equal(np.sort(order, axis=1), np.tile(np.arange(4), (2000, 1)))
  assert len({tuple(row) for row in order}) == 24


def test_jitter_probability_one_leaves_images_unchanged():
  images = caffe_batch(2, 8, 8)
  for seed in range(5):
    np.testing.assert_array_equal(
        aug.color_jitter(images, tf.constant([seed, 1]), probability=1.0), images)


def test_default_probabilities_follow_daformers_conventions():
  images = caffe_batch(1, 30, 30)  # 30 -> kernel 3 (10 would give 1: no blur at all)
  seeds = tf.stack([tf.range(120), tf.fill([120], 5)], axis=1)

  @tf.function(autograph=False)
  def changed(augment):
    return tf.map_fn(lambda s: tf.reduce_any(augment(images, s) != images), seeds,
                     fn_output_signature=tf.bool)

  jittered = np.mean(changed(aug.color_jitter).numpy())
  blurred = np.mean(changed(aug.gaussian_blur).numpy())
  # Binomial(120, p) within about 4 standard deviations; 0.2 (the other convention) is far off.
  assert 0.65 < jittered < 0.95  # U > 0.2: probability 0.8 (dacs_transforms.py:56)
  assert 0.31 < blurred < 0.69  # probability 0.5


# --- strong_augment: seeds and XLA --------------------------------------------------------------


def test_same_seed_same_output_other_seed_differs():
  images = caffe_batch(2, 24, 40)
  first = aug.strong_augment(images, SEED, ON).numpy()
  np.testing.assert_array_equal(first, aug.strong_augment(images, SEED, ON).numpy())
  int64 = tf.constant([7, 11], tf.int64)
  np.testing.assert_array_equal(aug.strong_augment(images, int64, ON).numpy(),
                                aug.strong_augment(images, int64, ON).numpy())
  other = aug.strong_augment(images, tf.constant([7, 12]), ON).numpy()
  assert np.abs(first - other).max() > 1.0


def test_per_image_draws_differ_within_a_batch():
  image = caffe_batch(1, 24, 40).numpy()
  out = aug.strong_augment(np.concatenate([image] * 3), SEED, ON).numpy()
  assert np.abs(out[0] - out[1]).max() > 1.0 and np.abs(out[1] - out[2]).max() > 1.0


def test_xla_matches_eager():
  images = caffe_batch(2, 24, 40)
  compiled = tf.function(lambda x, s: aug.strong_augment(x, s, ON), jit_compile=True,
                         autograph=False)
  for seed in ([7, 11], [1, 2]):
    seed = tf.constant(seed, tf.int32)
    eager = aug.strong_augment(images, seed, ON).numpy()
    assert np.abs(eager - images.numpy()).max() > 1.0
    # 1e-3 on the 0..255 scale (4e-6 in 0..1): float rounding of XLA's fused HSV round trips.
    np.testing.assert_allclose(compiled(images, seed).numpy(), eager, atol=1e-3)


def test_dynamic_shapes_match_static():
  images = caffe_batch(2, 24, 40)
  dynamic = tf.function(lambda x, s: aug.strong_augment(x, s, ON), autograph=False,
                        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                         tf.TensorSpec([2], tf.int32)])
  np.testing.assert_allclose(dynamic(images, SEED).numpy(),
                             aug.strong_augment(images, SEED, ON).numpy(), atol=1e-3)


# --- flip ---------------------------------------------------------------------------------------


def test_flip_flips_labels_and_weights_with_images():
  images = caffe_batch(8, 5, 6).numpy()
  labels = np.random.default_rng(4).integers(0, 19, (8, 5, 6)).astype(np.int32)
  weights = np.random.default_rng(5).uniform(size=(8, 5, 6, 1)).astype(np.float32)
  out_images, out_labels, out_weights = aug.random_flip(images, SEED, labels, weights)
  flipped = []
  for b in range(8):
    is_flipped = np.array_equal(out_images[b], images[b, :, ::-1])
    assert is_flipped or np.array_equal(out_images[b], images[b])
    np.testing.assert_array_equal(out_labels[b], labels[b, :, ::-1] if is_flipped else labels[b])
    np.testing.assert_array_equal(out_weights[b],
                                  weights[b, :, ::-1] if is_flipped else weights[b])
    flipped.append(is_flipped)
  assert 0 < sum(flipped) < 8
  assert out_labels.dtype == tf.int32
  unchanged = aug.random_flip(images, SEED, labels, probability=0.0)
  np.testing.assert_array_equal(unchanged[0], images)
  np.testing.assert_array_equal(unchanged[1], labels)
