"""StrideOneConv2D / stride_one_conv2d: Conv2D's numbers and gradients on the faster kernel paths."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import

from tfdaseg.models import stride_one_conv
from tfdaseg.models.stride_one_conv import (DilatedConv2D, StrideOneConv2D, filter_gradient,
                                            live_taps, matmul_filter_gradient,
                                            onednn_gemm_filter_gradient, padded_filter_gradient,
                                            stride_one_conv2d)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _value_and_gradients(layer, images):
  with tf.GradientTape() as tape:
    tape.watch(images)
    outputs = layer(images)
    loss = tf.reduce_sum(tf.cast(outputs, tf.float32) ** 2)
  return [outputs, *tape.gradient(loss, [images, *layer.trainable_variables])]


def _pair(dilation: int, padding: str, dtype: str = "float32", kernel_size: int = 3):
  keras.utils.set_random_seed(1)
  plain = keras.layers.Conv2D(5, kernel_size, dilation_rate=dilation, padding=padding, dtype=dtype)
  dilated = StrideOneConv2D(5, kernel_size, dilation_rate=dilation, padding=padding, dtype=dtype)
  plain.build((None, None, None, 7))
  dilated.build((None, None, None, 7))
  dilated.set_weights(plain.get_weights())
  return plain, dilated


# "same" on the 6x10 map: dilation 24 reaches it with the centre tap only (DeepLab-v2's ASPP at
# demo size), 6 with the centre row; 4 with every tap, the 9-row kernel taller than the map: the
# padded filter gradient on oneDNN CPUs; 2 oneDNN's own; 1x1: the float32 matmul filter gradient
# where the CPU takes it.
@pytest.mark.parametrize("dilation,padding,kernel_size", [
    (2, "valid", 3), (2, "same", 3), (4, "same", 3), (6, "same", 3), (24, "same", 3),
    (1, "valid", 1)])
def test_matches_conv2d_forward_and_backward(dilation, padding, kernel_size):
  plain, dilated = _pair(dilation, padding, kernel_size=kernel_size)
  margin = dilation * (kernel_size - 1)
  size = (2, 6 + margin, 10 + margin, 7) if padding == "valid" else (2, 6, 10, 7)
  images = tf.constant(np.random.default_rng(0).normal(size=size).astype(np.float32))
  for expected, actual in zip(_value_and_gradients(plain, images),
                              _value_and_gradients(dilated, images)):
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected.numpy()).max()))


# float16 runs on TensorFlow's own CPU kernels where the CPU lacks AVX512-FP16 (oneDNN leaves
# it to them), whose gradients refuse dilation: the layer must take the fallback there.
@pytest.mark.parametrize("precision,compute", [("mixed_bfloat16", tf.bfloat16),
                                               ("mixed_float16", tf.float16)])
def test_matches_conv2d_forward_and_backward_in_mixed_precision(precision, compute):
  plain, dilated = _pair(6, "same", dtype=precision)
  images = tf.constant(np.random.default_rng(0).normal(size=(2, 12, 12, 7)).astype(np.float32))
  expected, actual = _value_and_gradients(plain, images), _value_and_gradients(dilated, images)
  assert actual[0].dtype == compute
  for want, got in zip(expected, actual):
    want, got = tf.cast(want, tf.float32).numpy(), tf.cast(got, tf.float32).numpy()
    np.testing.assert_allclose(got, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))


def _graph_ops(function, *args) -> set[str]:
  return {op.type for op in tf.function(function).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(), reason="oneDNN is off in this process")
def test_one_kernel_call_with_onednn():
  spec = tf.TensorSpec((2, 8, 16, 4), tf.float32)
  kernel = tf.zeros((3, 3, 4, 3))
  ops = _graph_ops(lambda x: stride_one_conv2d(x, kernel, 12, "same"), spec)
  assert "Conv2D" in ops and "SpaceToBatchND" not in ops
  # Keras' own path reshuffles: what this module avoids.
  assert "SpaceToBatchND" in _graph_ops(
      lambda x: keras.ops.conv(x, kernel, padding="same", dilation_rate=12), spec)


def test_falls_back_to_space_to_batch_without_onednn():
  # TensorFlow's generic CPU Conv2D has no dilation: the one-kernel path would fail to run.
  script = textwrap.dedent("""
      import numpy as np, tensorflow as tf
      from tfdaseg.models.stride_one_conv import StrideOneConv2D
      layer = StrideOneConv2D(3, 3, dilation_rate=6, padding="same")
      images = tf.constant(np.ones((1, 8, 8, 2), np.float32))
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(images))
      gradients = tape.gradient(loss, layer.trainable_variables)
      graph = tf.function(layer).get_concrete_function(
          tf.TensorSpec((1, 8, 8, 2), tf.float32)).graph
      print("space_to_batch", any(op.type == "SpaceToBatchND" for op in graph.get_operations()),
            "finite", bool(all(np.isfinite(g.numpy()).all() for g in gradients)))
      """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False,
                          env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0",
                               "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": ROOT})
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-4:] == ["space_to_batch", "True", "finite", "True"]


def test_saves_and_loads_as_itself(tmp_path):
  inputs = keras.Input((None, None, 2))
  model = keras.Model(inputs, StrideOneConv2D(3, 3, dilation_rate=2, name="dilated")(inputs))
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded.get_layer("dilated"), StrideOneConv2D)
  images = np.random.default_rng(0).normal(size=(1, 9, 9, 2)).astype(np.float32)
  np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6)


def test_loads_files_saved_under_the_earlier_class_name(tmp_path):
  inputs = keras.Input((None, None, 2))
  model = keras.Model(inputs, DilatedConv2D(3, 3, dilation_rate=2, name="dilated")(inputs))
  path = str(tmp_path / "model.keras")
  model.save(path)
  assert isinstance(keras.models.load_model(path).get_layer("dilated"), StrideOneConv2D)


# Odd and even kernels, both paddings, unequal rates: TensorFlow's SAME puts the odd zero after.
@pytest.mark.parametrize("kernel_size,rates,padding", [
    ((1, 1), (1, 1), "VALID"), ((3, 3), (1, 1), "SAME"), ((3, 3), (2, 3), "SAME"),
    ((3, 3), (24, 24), "SAME"), ((2, 4), (1, 2), "SAME"), ((3, 3), (2, 2), "VALID")])
@pytest.mark.parametrize("gradient", [filter_gradient, padded_filter_gradient])
def test_filter_gradient_is_the_convolution_filter_gradient(kernel_size, rates, padding,
                                                           gradient):
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(2, 9, 13, 4)).astype(np.float32))
  kernel_shape = (*kernel_size, 4, 5)
  outputs = tf.nn.conv2d(images, tf.zeros(kernel_shape), 1, padding, dilations=rates)
  output_gradient = tf.constant(rng.normal(size=outputs.shape).astype(np.float32))
  expected = tf.compat.v1.nn.conv2d_backprop_filter(
      images, kernel_shape, output_gradient, [1, 1, 1, 1], padding, dilations=[1, *rates, 1])
  actual = gradient(images, output_gradient, kernel_size, rates, padding)
  np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-5, atol=1e-4)


def _filter_gradient_ops(kernel_size: int, dilation: int = 2) -> set[str]:
  layer = StrideOneConv2D(5, kernel_size, dilation_rate=dilation, padding="same")
  layer.build((None, None, None, 7))

  def gradients(images):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tf.cast(layer(images), tf.float32) ** 2)
    return tape.gradient(loss, layer.trainable_variables)

  return _graph_ops(gradients, tf.TensorSpec((2, 8, 16, 7), tf.float32))


_MAP = tf.zeros((2, 8, 16, 7))


@pytest.mark.parametrize("kernel_size", [1, 3])
def test_bfloat16_filter_gradient_is_one_matmul_where_it_pays(mixed_bfloat16, kernel_size):
  if not matmul_filter_gradient(tf.cast(_MAP, tf.bfloat16), (kernel_size,) * 2, (2, 2), "same"):
    pytest.skip("bfloat16 filter gradients keep the convolution kernel on this device")
  ops = _filter_gradient_ops(kernel_size)
  assert "MatMul" in ops and "Conv2DBackpropInput" in ops
  assert "Conv2DBackpropFilter" not in ops


@pytest.mark.skipif(not matmul_filter_gradient(_MAP, (1, 1)),
                    reason="float32 filter gradients keep the convolution kernel on this device")
def test_float32_filter_gradient_is_one_matmul_for_1x1_kernels_only():
  ops = _filter_gradient_ops(1)
  assert "MatMul" in ops and "Conv2DBackpropFilter" not in ops
  # 3x3 im2col matmuls measured slower than oneDNN's float32 kernel.
  assert not matmul_filter_gradient(_MAP, (3, 3), (2, 2), "same")
  assert "Conv2DBackpropFilter" in _filter_gradient_ops(3)


# The rule per CPU (stride_one_conv's docstring has the measurements): 8 rows, rate 12 "same" is
# oneDNN's gemm fallback.
@pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(), reason="oneDNN is off in this process")
@pytest.mark.parametrize("flags,dtype,kernel_size,rate,expected", [
    ({"avx512f", "avx512_bf16"}, tf.bfloat16, 3, 2, True),
    ({"avx512f", "avx512_bf16"}, tf.bfloat16, 1, 1, True),
    ({"avx512f"}, tf.bfloat16, 1, 1, False),
    ({"avx512f", "avx512_bf16", "amx_bf16"}, tf.bfloat16, 1, 1, True),
    ({"avx512f", "avx512_bf16", "amx_bf16"}, tf.bfloat16, 3, 2, False),
    ({"avx512f", "avx512_bf16", "amx_bf16"}, tf.bfloat16, 3, 12, True),
    ({"avx512f", "avx512_bf16", "amx_bf16"}, tf.float32, 1, 1, False),
    ({"avx512f", "avx512_bf16"}, tf.float32, 1, 1, True),
    ({"avx512f", "avx512_bf16"}, tf.float32, 3, 12, False),
    ({"avx2"}, tf.float32, 1, 1, False)])
def test_matmul_filter_gradient_rule(monkeypatch, flags, dtype, kernel_size, rate, expected):
  monkeypatch.setattr(stride_one_conv, "_cpu_flags", lambda: frozenset(flags))
  assert matmul_filter_gradient(tf.cast(_MAP, dtype), (kernel_size,) * 2, (rate, rate),
                                "same") == expected


# (map height, width), kernel, rates, padding -> the rows and columns of taps kept.
@pytest.mark.parametrize("map_size,kernel_size,rates,padding,rows,cols", [
    ((21, 41), (3, 3), (24, 24), "same", (1, 2), (0, 3)),   # ASPP rate 24 at 1/8 of 320x160
    ((21, 41), (3, 3), (18, 18), "same", (0, 3), (0, 3)),   # 18 < 21: every tap reaches in
    ((6, 10), (3, 3), (24, 24), "SAME", (1, 2), (1, 2)),
    ((9, 9), (5, 5), (5, 4), "same", (1, 4), (0, 5)),
    ((6, 10), (3, 3), (24, 24), "valid", (0, 3), (0, 3)),
    ((None, None), (3, 3), (24, 24), "same", (0, 3), (0, 3)),
    ((1, 1), (2, 4), (3, 3), "same", (0, 2), (0, 4))])      # even kernels: nothing to centre
def test_live_taps_keeps_the_taps_that_reach_into_the_map(map_size, kernel_size, rates, padding,
                                                          rows, cols):
  kernel = tf.reshape(tf.range(np.prod(kernel_size) * 2.0), (*kernel_size, 1, 2))
  np.testing.assert_array_equal(live_taps(kernel, map_size, rates, padding),
                                kernel[rows[0]:rows[1], cols[0]:cols[1]])


def test_live_taps_convolution_is_the_whole_kernel_convolution():
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(2, 21, 41, 4)).astype(np.float32))
  kernel = tf.Variable(rng.normal(size=(3, 3, 4, 5)).astype(np.float32))
  with tf.GradientTape(persistent=True) as tape:
    cut = stride_one_conv2d(images, kernel, 24, "same")
    whole = tf.nn.conv2d(images, kernel, 1, "SAME", dilations=24)
    losses = [tf.reduce_sum(y ** 2) for y in (cut, whole)]
  np.testing.assert_allclose(cut, whole, rtol=1e-5, atol=1e-4)
  cut_gradient, whole_gradient = (tape.gradient(loss, kernel) for loss in losses)
  np.testing.assert_allclose(cut_gradient, whole_gradient, rtol=1e-5, atol=1e-3)
  assert not np.any(cut_gradient.numpy()[[0, 2]])


@pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(), reason="oneDNN is off in this process")
def test_onednn_gemm_filter_gradient_where_the_dilated_kernel_is_taller_than_the_map():
  # ONEDNN_VERBOSE (oneDNN 3.7): x64:gemm:jit for 24 rows at rate 12, jit:avx512_core for 25;
  # 41 columns at rate 24 stay on the jit kernel.
  def gemm(shape, rate, padding="same"):
    return onednn_gemm_filter_gradient(tf.zeros(shape), (3, 3), (rate, rate), padding)

  assert gemm((1, 24, 41, 8), 12) and gemm((1, 21, 41, 8), 24)
  assert not gemm((1, 25, 41, 8), 12) and not gemm((1, 65, 41, 8), 24)
  assert not gemm((1, 24, 41, 8), 12, "valid")
  assert not onednn_gemm_filter_gradient(tf.TensorSpec((1, None, None, 8)), (3, 3), (12, 12),
                                         "same")


@pytest.mark.skipif(not _pywrap_util_port.IsMklEnabled(), reason="oneDNN is off in this process")
def test_float32_filter_gradient_pads_only_where_onednn_would_fall_back_to_gemm():
  # 8 rows: a 3x3 kernel at rate 6 spans 13 rows, at rate 2 five.
  taller = _filter_gradient_ops(3, dilation=6)
  assert "Pad" in taller and "Conv2DBackpropFilter" in taller and "MatMul" not in taller
  assert "Pad" not in _filter_gradient_ops(3, dilation=2)
