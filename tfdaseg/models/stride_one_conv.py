"""Stride-1 2-D convolutions on the kernel path this device runs fastest, same numbers as Conv2D.

Two paths, each taken only where it is measured faster:

* Dilation as one kernel call. `tf.nn.convolution` (what Keras' `Conv2D` and `ops.conv` call) runs
  every dilated convolution as space-to-batch, a convolution, then batch-to-space, because
  TensorFlow's generic CPU kernels have no dilation. oneDNN's CPU kernels (on by default on x86)
  and cuDNN do, forward and backward, and skip the two reshuffles: on this project's 2-core CPU a
  DeepLab-v2 ASPP branch at 512x512 (64x64x2048 -> 19, dilation 6) trains 1.6x faster, at dilation
  24 5x (bench/train_step.py measures the whole step). Where the kernels lack dilation (a CPU with
  oneDNN off, as `--deterministic` sets) the layers fall back to `tf.nn.convolution`: the same
  numbers up to float summation order. So does a dtype that oneDNN leaves to TensorFlow's own
  kernels on this CPU (float16 without AVX512-FP16, e.g. on an AMD EPYC with AVX512-BF16: those
  kernels then refuse the dilation).
* bfloat16 filter gradients as one matmul, on CPUs with AVX512-BF16 but no AMX. There oneDNN 3.7
  (TensorFlow 2.21) computes bfloat16 backward-weights convolutions with its older `jit_bf16`
  kernels at about half its bfloat16 forward rate (bench/onednn_breakdown.py: 180 against 390
  GFLOP/s, a third of the bf16 DeepLab-v2 step). The filter gradient is then computed as the
  image's im2col columns (one slice per kernel tap) times the output gradient, one bfloat16
  matmul: 1.1-1.8x faster per layer at DeepLab-v2's shapes. The forward convolution and the
  input gradient keep oneDNN's kernels. In float32 the matmul measured no faster, and on AMX CPUs
  or GPUs the convolution kernels are left alone (not measured there).

Only plain convolutions: oneDNN's depthwise backward kernels ignore dilation (their gradients
differ from space-to-batch's), so depthwise layers keep Keras' path.
"""

import functools

import keras
import tensorflow as tf
from keras import ops
# IsMklEnabled follows TF_ENABLE_ONEDNN_OPTS (the public API has no equivalent).
from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-direct-tensorflow-import


def _lands_on_gpu(inputs) -> bool:
  """Whether an op on `inputs` runs on a GPU (its device, where set, decides)."""
  device = getattr(inputs, "device", "") or ""
  return bool(tf.config.list_logical_devices("GPU")) and "CPU" not in device.upper()


def native_dilation(inputs) -> bool:
  """Whether a dilated Conv2D on `inputs` can run as one kernel call.

  Args:
    inputs: The convolution's input (its device, where set, decides; then its dtype).

  Returns:
    True where the op lands on a GPU, or with oneDNN on where its kernels take the dtype.
  """
  if _lands_on_gpu(inputs):
    return True
  return bool(_pywrap_util_port.IsMklEnabled()) and _cpu_kernels_have_dilation(inputs.dtype.name)


@functools.cache
def _cpu_kernels_have_dilation(dtype: str) -> bool:
  """Whether a dilated convolution and both its gradients run on the CPU in `dtype`.

  oneDNN takes a dtype only where the CPU has its instructions (TensorFlow's mkl_util checks them);
  otherwise the graph keeps TensorFlow's own kernels, whose gradients have no dilation. A tiny
  graph, run once per dtype and process, asks the kernels themselves.
  """

  @tf.function
  def probe(x, kernel):
    y = tf.nn.conv2d(x, kernel, strides=1, padding="VALID", dilations=2)
    # tf.gradients, not a tape: init_scope (below) pauses tapes.
    return tf.gradients(y, [x, kernel])

  with tf.init_scope(), tf.device("CPU:0"):
    try:
      probe(tf.ones((1, 5, 5, 1), dtype), tf.ones((3, 3, 1, 1), dtype))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
      return False
  return True


@functools.cache
def _cpu_flags() -> frozenset[str]:
  """The CPU's feature flags from /proc/cpuinfo (none where it cannot be read)."""
  try:
    with open("/proc/cpuinfo") as f:
      return frozenset(next((line.split(":", 1)[1].split() for line in f
                             if line.startswith("flags")), ()))
  except OSError:
    return frozenset()


def matmul_filter_gradient(inputs) -> bool:
  """Whether a stride-1 convolution on `inputs` takes its filter gradient as one matmul.

  Args:
    inputs: The convolution's input.

  Returns:
    True for bfloat16 on a CPU whose oneDNN runs bfloat16 (AVX512-BF16) without AMX.
  """
  if inputs.dtype != tf.bfloat16 or _lands_on_gpu(inputs):
    return False
  flags = _cpu_flags()
  return (bool(_pywrap_util_port.IsMklEnabled()) and "avx512_bf16" in flags
          and "amx_bf16" not in flags)


def filter_gradient(inputs, output_gradient, kernel_size: tuple[int, int],
                    rates: tuple[int, int], padding: str):
  """dLoss/dkernel of a stride-1 convolution: im2col columns of `inputs` times the output gradient.

  Args:
    inputs: [B, H, W, C_in].
    output_gradient: [B, H', W', C_out].
    kernel_size: (kh, kw).
    rates: Dilation (rows, cols).
    padding: "VALID" or "SAME" (TensorFlow's: the odd zero goes after).

  Returns:
    [kh, kw, C_in, C_out], in the inputs' dtype.
  """
  (kh, kw), (rh, rw) = kernel_size, rates
  if padding == "SAME":
    rows, cols = rh * (kh - 1), rw * (kw - 1)
    inputs = tf.pad(inputs, [[0, 0], [rows // 2, rows - rows // 2], [cols // 2, cols - cols // 2],
                             [0, 0]])
  height, width = tf.shape(output_gradient)[1], tf.shape(output_gradient)[2]
  taps = [inputs[:, i * rh:i * rh + height, j * rw:j * rw + width, :]
          for i in range(kh) for j in range(kw)]
  channels_in, channels_out = inputs.shape[-1], output_gradient.shape[-1]
  columns = tf.reshape(tf.concat(taps, -1) if len(taps) > 1 else taps[0],
                       (-1, kh * kw * channels_in))
  gradient = tf.matmul(columns, tf.reshape(output_gradient, (-1, channels_out)), transpose_a=True)
  return tf.reshape(gradient, (kh, kw, channels_in, channels_out))


def _conv2d_with_matmul_filter_gradient(inputs, kernel, rates: tuple[int, int], padding: str):
  @tf.custom_gradient
  def conv(x, w):
    def gradient(dy):
      dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                          strides=[1, 1, 1, 1], padding=padding,
                                          dilations=[1, *rates, 1])
      return dx, filter_gradient(x, dy, tuple(w.shape[:2]), rates, padding)
    return tf.nn.conv2d(x, w, strides=1, padding=padding, dilations=rates), gradient
  return conv(inputs, kernel)


def stride_one_conv2d(inputs, kernel, dilation_rate: int | tuple[int, int] = 1,
                      padding: str = "valid"):
  """A stride-1 NHWC 2-D convolution on the fastest kernel path this device has.

  Args:
    inputs: [B, H, W, C_in].
    kernel: [kh, kw, C_in, C_out].
    dilation_rate: Dilation, one int or (rows, cols).
    padding: "valid" or "same".

  Returns:
    [B, H', W', C_out].
  """
  rates = (dilation_rate,) * 2 if isinstance(dilation_rate, int) else tuple(dilation_rate)
  if matmul_filter_gradient(inputs):
    return _conv2d_with_matmul_filter_gradient(inputs, ops.cast(kernel, inputs.dtype), rates,
                                               padding.upper())
  if rates == (1, 1) or not native_dilation(inputs):
    return ops.conv(inputs, kernel, strides=1, padding=padding, dilation_rate=rates)
  return tf.nn.conv2d(inputs, ops.cast(kernel, inputs.dtype), strides=1, padding=padding.upper(),
                      dilations=rates)


@keras.saving.register_keras_serializable(package="tfdaseg")
class StrideOneConv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D` whose stride-1 convolution runs as `stride_one_conv2d`.

  Same weights, config and checkpoints as `Conv2D`; channels-last only (other layouts, strides
  and groups take Conv2D's own path).
  """

  def convolution_op(self, inputs, kernel):
    if (self.data_format != "channels_last" or tuple(self.strides) != (1, 1)
        or self.groups != 1):
      return super().convolution_op(inputs, kernel)
    return stride_one_conv2d(inputs, kernel, tuple(self.dilation_rate), self.padding)


@keras.saving.register_keras_serializable(package="tfdaseg")
class DilatedConv2D(StrideOneConv2D):
  """StrideOneConv2D under its earlier name, so that `.keras` files saved before it load."""
