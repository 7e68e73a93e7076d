"""CeilModeMaxPooling2D against a brute-force PyTorch-semantics pool; AsppClassifier branch sums."""

import keras
import numpy as np
import pytest

from tfdaseg.models.aspp_classifier import AsppClassifier
from tfdaseg.models.pooling import CeilModeMaxPooling2D


def torch_ceil_max_pool(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
  """Brute-force `torch.nn.functional.max_pool2d(..., ceil_mode=True)` on NHWC numpy arrays,
  following PyTorch's output-size formula (incl. the rule that drops a window starting in the
  right padding) and ignoring padded cells."""

  def out_size(n):
    size = -(-(n + 2 * p - k) // s) + 1
    if (size - 1) * s >= n + p:
      size -= 1
    return size

  batch, height, width, channels = x.shape
  out = np.empty((batch, out_size(height), out_size(width), channels), x.dtype)
  for i in range(out.shape[1]):
    for j in range(out.shape[2]):
      r0, c0 = i * s - p, j * s - p
      window = x[:, max(r0, 0):min(r0 + k, height), max(c0, 0):min(c0 + k, width)]
      out[:, i, j] = window.max(axis=(1, 2))
  return out


@pytest.mark.parametrize("height,width", [(8, 8), (9, 7), (1, 2), (33, 16)])
def test_ceil_mode_pool_matches_pytorch_semantics(height, width):
  # Negative inputs: zero padding would leak zeros into border windows; -inf padding must not.
  x = -np.abs(np.random.default_rng(0).normal(size=(2, height, width, 3))).astype("float32") - 1
  got = keras.ops.convert_to_numpy(CeilModeMaxPooling2D(3, 2, 1)(x))
  np.testing.assert_array_equal(got, torch_ceil_max_pool(x, 3, 2, 1))


def test_ceil_mode_pool_static_output_shape_matches_call():
  layer = CeilModeMaxPooling2D(3, 2, 1)
  assert layer.compute_output_shape((1, 33, 32, 4)) == (1, 17, 17, 4)
  assert layer.compute_output_shape((None, None, 9, 4)) == (None, None, 5, 4)


def test_ceil_mode_pool_rejects_unsupported_geometry():
  with pytest.raises(ValueError, match="pool_size // 2"):
    CeilModeMaxPooling2D(pool_size=2, strides=2, padding=2)
  with pytest.raises(ValueError, match="inside the padding"):
    CeilModeMaxPooling2D(pool_size=2, strides=2, padding=1)


def _branch(x, kernel, bias, rate):
  padded = np.pad(x, [(0, 0), (rate, rate), (rate, rate), (0, 0)])
  conv = keras.ops.conv(padded, kernel, strides=1, padding="valid", dilation_rate=rate)
  return keras.ops.convert_to_numpy(conv) + keras.ops.convert_to_numpy(bias)


@pytest.mark.parametrize("aspp_compat,summed", [("adaptsegnet", 2), ("full", 4)])
def test_aspp_classifier_sums_the_compat_branches(aspp_compat, summed):
  x = np.random.default_rng(1).normal(size=(1, 7, 9, 4)).astype("float32")
  head = AsppClassifier(num_classes=3, aspp_compat=aspp_compat)
  head.build(x.shape)
  for index, bias in enumerate(head.biases):
    bias.assign(np.full(3, index + 1.0, "float32"))
  expected = sum(_branch(x, head.kernels[i], head.biases[i], r)
                 for i, r in enumerate(head.rates[:summed]))
  np.testing.assert_allclose(keras.ops.convert_to_numpy(head(x)), expected, rtol=1e-5, atol=1e-5)
  # Every branch has weights (for checkpoint import); only the summed ones train.
  assert len(head.weights) == 8
  assert len(head.trainable_weights) == 2 * summed
  head.trainable = False
  head.trainable = True
  assert len(head.trainable_weights) == 2 * summed


def test_aspp_classifier_rejects_unknown_compat():
  with pytest.raises(ValueError, match="unknown aspp_compat 'caffe'"):
    AsppClassifier(num_classes=3, aspp_compat="caffe")
