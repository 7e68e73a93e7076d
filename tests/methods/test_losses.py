"""Loss functions against independent numpy implementations of the reference formulas."""

import numpy as np
import pytest
import tensorflow as tf

from tfdaseg.methods import losses
from tfdaseg.methods.base import MethodConfig, segmentation_objective
from tfdaseg.models.output_conventions import DEEPLAB, MMSEG, upsample_bilinear


def _align_corners_coords(n_out: int, n_in: int) -> np.ndarray:
  if n_out == 1:
    return np.zeros(1)
  return np.arange(n_out) * (n_in - 1) / (n_out - 1)


def _half_pixel_coords(n_out: int, n_in: int) -> np.ndarray:
  # PyTorch's area_pixel_compute_source_index (align_corners=False), negative clamped to 0.
  return np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0.0)


def numpy_upsample_align_corners(image: np.ndarray, out_h: int, out_w: int,
                                 align_corners: bool = True) -> np.ndarray:
  """F.interpolate(mode="bilinear"): with align_corners output i samples
  i * (in - 1) / (out - 1), without (i + 0.5) * in / out - 0.5."""
  _, in_h, in_w, _ = image.shape
  coords = _align_corners_coords if align_corners else _half_pixel_coords
  ys, xs = coords(out_h, in_h), coords(out_w, in_w)
  y0 = np.floor(ys).astype(int)
  x0 = np.floor(xs).astype(int)
  y1, x1 = np.minimum(y0 + 1, in_h - 1), np.minimum(x0 + 1, in_w - 1)
  wy, wx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
  top = image[:, y0][:, :, x0] * (1 - wx) + image[:, y0][:, :, x1] * wx
  bottom = image[:, y1][:, :, x0] * (1 - wx) + image[:, y1][:, :, x1] * wx
  return top * (1 - wy) + bottom * wy


@pytest.mark.parametrize("out_size", [(9, 13), (4, 4), (17, 5)])
def test_upsample_bilinear_matches_align_corners_formula(out_size):
  image = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
  expected = numpy_upsample_align_corners(image.astype(np.float64), *out_size)
  actual = upsample_bilinear(image, out_size).numpy()
  np.testing.assert_allclose(actual, expected, atol=1e-5)
  # Corner pixels map exactly onto corner pixels (what align_corners means).
  np.testing.assert_allclose(actual[:, -1, -1], image[:, -1, -1], atol=1e-6)


@pytest.mark.parametrize("out_size", [(9, 13), (16, 24), (3, 2)])
def test_upsample_bilinear_without_aligned_corners_matches_torch_formula(out_size):
  image = np.random.default_rng(0).normal(size=(2, 4, 6, 3)).astype(np.float32)
  expected = numpy_upsample_align_corners(image.astype(np.float64), *out_size, align_corners=False)
  actual = upsample_bilinear(image, out_size, align_corners=False).numpy()
  np.testing.assert_allclose(actual, expected, atol=1e-5)
  assert np.abs(actual - upsample_bilinear(image, out_size).numpy()).max() > 1e-3


def test_upsample_bilinear_compiles_with_xla():
  image = tf.random.normal([1, 5, 7, 2])
  compiled = tf.function(lambda x: upsample_bilinear(x, [11, 9]), jit_compile=True)
  np.testing.assert_allclose(compiled(image), upsample_bilinear(image, [11, 9]),
                             atol=1e-5)


def numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  valid = (labels >= 0) & (labels < num_classes)
  picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  return float(-(picked * valid).sum() / max(valid.sum(), 1))


def test_segmentation_loss_upsamples_and_ignores_255():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 4, 5, 3)).astype(np.float32)
  labels = rng.integers(0, 3, (2, 12, 15)).astype(np.int32)
  labels[:, :3] = 255
  expected = numpy_cross_entropy(numpy_upsample_align_corners(logits.astype(np.float64), 12, 15),
                                 labels, 3)
  actual = float(losses.segmentation_loss(logits, labels, 3))
  assert actual == pytest.approx(expected, rel=1e-5)


def test_segmentation_loss_is_zero_without_labelled_pixels():
  logits = tf.random.normal([1, 2, 2, 3])
  assert float(losses.segmentation_loss(logits, tf.fill([1, 8, 8], 255), 3)) == 0.0


def test_entropy_matches_advent_formula():
  logits = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  # ADVENT prob_2_entropy and entropy_loss (log2 / log2(C) == ln / ln(C)).
  expected_map = -p * np.log2(p + 1e-30) / np.log2(5)
  np.testing.assert_allclose(losses.normalised_entropy_map(logits), expected_map, atol=1e-6)
  expected = -np.sum(p * np.log2(p + 1e-30)) / (2 * 3 * 4 * np.log2(5))
  assert float(losses.entropy_loss(logits)) == pytest.approx(expected, rel=1e-5)


def _numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray,
                         over_all: bool, align_corners: bool = True) -> float:
  """Pixel CE after the bilinear upsampling, weighted, averaged (losses' conventions)."""
  up = numpy_upsample_align_corners(logits, labels.shape[1], labels.shape[2], align_corners)
  log_p = up - np.log(np.exp(up).sum(-1, keepdims=True))
  valid = labels != 255
  picked = np.take_along_axis(log_p, np.where(valid, labels, 0)[..., None], -1)[..., 0]
  total = -(picked * valid * weights).sum()
  return total / (labels.size if over_all else max(valid.sum(), 1))


# mmseg's conventions (DAFormer/HRDA): half-pixel resizing, every CE over all pixels.
@pytest.mark.parametrize("conventions,over_all", [(DEEPLAB, False), (DEEPLAB, True),
                                                  (MMSEG, False)])
def test_hrda_objective_is_fused_and_detail_crop_cross_entropy(conventions, over_all):
  rng = np.random.default_rng(3)
  fused = rng.normal(size=(2, 16, 24, 4)).astype(np.float32)
  detail = rng.normal(size=(2, 16, 24, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (2, 64, 96))
  labels[:, :5] = 255
  weights = rng.uniform(size=(2, 64, 96)).astype(np.float32)
  box = (8, 40, 32, 64)
  outputs = {"logits": tf.constant(fused), "detail_logits": tf.constant(detail),
             "detail_box": tf.constant([box, box], tf.float32)}
  config = MethodConfig(lambda_seg=0.0, detail_loss_weight=0.1)
  objective = segmentation_objective(outputs, tf.constant(labels), 4, config, "mix",
                                     pixel_weights=tf.constant(weights),
                                     average_over_all_pixels=over_all, conventions=conventions)
  assert sorted(objective.losses) == ["mix_detail", "mix_main"]
  y1, y2, x1, x2 = box
  over_all = over_all or conventions.average_over_all_pixels
  aligned = conventions.align_corners
  expected = (0.9 * _numpy_cross_entropy(fused, labels, weights, over_all, aligned)
              + 0.1 * _numpy_cross_entropy(detail[:, y1 // 4:y2 // 4, x1 // 4:x2 // 4],
                                           labels[:, y1:y2, x1:x2], weights[:, y1:y2, x1:x2],
                                           over_all, aligned))
  assert float(objective.total()) == pytest.approx(expected, rel=1e-5)
  # Without a detail branch: CE(logits) alone, weight 1.
  plain = segmentation_objective({"logits": tf.constant(fused)}, tf.constant(labels), 4, config,
                                 "seg", "source", conventions=conventions)
  assert sorted(plain.losses) == ["seg_main_source"]
  assert float(plain.total()) == pytest.approx(_numpy_cross_entropy(
      fused, labels, np.ones_like(weights), conventions.average_over_all_pixels, aligned),
      rel=1e-5)
