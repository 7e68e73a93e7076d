"""Stride-1 2-D convolutions on the kernel path this device runs fastest, same numbers as Conv2D.

Four paths, each taken only where it is measured faster or costs nothing:

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
* Filter gradients as one matmul, on CPUs running oneDNN where it measured faster than oneDNN
  3.7's (TensorFlow 2.21) backward-weights kernels:
  - bfloat16 with AVX512-BF16 and no AMX (AMD EPYC, Zen 4), every kernel size. oneDNN computes
    bfloat16 backward-weights with its older `jit_bf16` kernels at about half its bfloat16
    forward rate (bench/onednn_breakdown.py: 180 against 390 GFLOP/s, a third of the bf16
    DeepLab-v2 step); the filter gradient is the image's im2col columns (one slice per kernel
    tap) times the output gradient, one bfloat16 matmul: 1.1-1.8x faster per layer at
    DeepLab-v2's shapes.
  - bfloat16 with AMX (Intel Xeon), 1x1 kernels and the gemm fallback below. oneDNN's
    `brgconv_bwd_w` AMX kernels ran at ~255 GFLOP/s against ~1100 for the forward; the matmul
    took 0.31-0.57 of their time at DeepLab-v2 R101's 1x1 layers (256 -> 1024 at 21x41: 4.0 ->
    1.6 ms; 1024 -> 2048: 16.7 -> 5.2 ms), and at the ASPP's 2048 -> 19 with rates 12 and 18 on
    21 rows 9.2 and 8.8 ms against 19.8 and 28.5 on the padded map. 3x3 layers keep oneDNN's:
    as im2col matmuls 1.55x slower at 64 channels, 0.87-0.9x at 256 and 512.
  - float32 1x1 kernels with AVX-512 and no AMX: the columns are the input itself, and the
    matmul took 0.6-0.9 of the backward-weights kernel's time at DeepLab-v2 R101's 1x1 layers on
    the AMD EPYC (41x81 and 21x41 maps, 64-2048 channels); 3x3 kernels measured 0.9-1.5x slower
    as im2col matmuls, so they keep oneDNN's. On the Intel Xeon (AMX) the matmuls gained nothing
    in the step (ONEDNN_VERBOSE: 326 ms of sgemm against 321 ms of `jit_1x1` backward-weights
    per step), so its float32 kernels are left alone.
  The forward convolution and the input gradient keep oneDNN's kernels. On GPUs the convolution
  kernels are left alone (not measured there).
* float32 filter gradients on a materialised padding where oneDNN 3.7 would fall back to its gemm
  kernel: a "same" dilated convolution whose dilated kernel is taller than the map (DeepLab-v2's
  ASPP rates 12 and 18 at 1/8 of a 320x160 crop; rate 24 keeps its centre row there, see
  `live_taps` below. ONEDNN_VERBOSE shows `x64:gemm:jit` for 24 rows and rate 12,
  `jit:avx512_core` for 25; the width does not matter). There the filter gradient of 2048 -> 19
  at 21x41 took 42 ms against 9 ms on the padded map. The forward pass and the input
  gradient keep the padding inside the kernel, which skips the padded taps: in DeepLab-v2's
  generator at 512x1024 (65x129 maps, ASPP rates 6 and 12, no gemm fallback) the ASPP's oneDNN
  primitives took 551 instead of 964 ms per forward + backward in float32, 291 instead of 345 ms
  in bfloat16 (ONEDNN_VERBOSE; the 2048-channel forward alone 4.7x faster in float32).
* Only the taps that reach into the map, on every device: a "same" convolution whose dilation puts
  a row (column) of taps at least the map's height (width) from every pixel reads padding there,
  for the forward pass and both gradients; `live_taps` cuts those taps from the kernel (exact:
  their products and gradient are zeros). DeepLab-v2's ASPP at rate 24 on the 21x41 map of a
  320x160 crop keeps its centre row: 2048 -> 19 filter gradient 43.2 -> 2.5 ms and forward 9.3
  -> 1.3 ms in bfloat16 (Intel Xeon, AMX), 11.6 -> 2.8 and 1.7 -> 1.55 ms in float32. The whole
  DeepLab-v2 R101 with the four-rate ASPP (`aspp_compat="full"`, ADVENT's), forward + backward,
  8 rounds interleaved in one process: 1.12x (float32) and 1.08x (bfloat16) faster at the
  demo's 128x64 batch of 8 (9x17 maps: rates 12-24 lose taps), 1.00 and 1.02 at 320x160
  batch 1 (21x41 maps: only rate 24 does).

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


def _onednn_cpu(inputs) -> bool:
  """Whether an op on `inputs` runs on the CPU with oneDNN's kernels."""
  return not _lands_on_gpu(inputs) and bool(_pywrap_util_port.IsMklEnabled())


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


def matmul_filter_gradient(inputs, kernel_size: tuple[int, int], rates: tuple[int, int] = (1, 1),
                           padding: str = "valid") -> bool:
  """Whether a stride-1 convolution on `inputs` takes its filter gradient as one matmul.

  Args:
    inputs: The convolution's input.
    kernel_size: (kh, kw).
    rates: Dilation (rows, cols).
    padding: "valid" or "same".

  Returns:
    True on a CPU running oneDNN: with AMX, for bfloat16 1x1 kernels and where oneDNN would fall
    back to gemm (`onednn_gemm_filter_gradient`); without AMX, for bfloat16 with AVX512-BF16
    (every kernel) and for float32 1x1 kernels with AVX-512.
  """
  if not _onednn_cpu(inputs):
    return False
  flags = _cpu_flags()
  one_by_one = tuple(kernel_size) == (1, 1)
  if "amx_bf16" in flags:
    return inputs.dtype == tf.bfloat16 and (
        one_by_one or onednn_gemm_filter_gradient(inputs, kernel_size, rates, padding))
  if inputs.dtype == tf.bfloat16:
    return "avx512_bf16" in flags
  return inputs.dtype == tf.float32 and one_by_one and "avx512f" in flags


def live_taps(kernel, map_size: tuple[int | None, int | None], rates: tuple[int, int],
              padding: str):
  """The centred part of a "same" convolution's kernel whose taps reach into the map.

  A tap of an odd kernel sits (i - (k - 1) / 2) * rate rows (columns) from its output pixel; where
  that is at least the map's height (width), it reads padding at every pixel: its products and
  its gradient are zeros. The taps left, with "same" padding, give the same output; the gradient
  of the slice gives the whole kernel's gradient (zeros for the cut taps).

  Args:
    kernel: [kh, kw, C_in, C_out].
    map_size: The input's static (height, width); None where unknown (nothing is cut there).
    rates: Dilation (rows, cols).
    padding: "valid" (nothing is cut) or "same".

  Returns:
    `kernel` itself, or its slice of live taps.
  """
  if padding.upper() != "SAME":
    return kernel
  window = []
  for size, extent, rate in zip(kernel.shape[:2], map_size, rates):
    centre = (size - 1) // 2
    reach = centre if extent is None or size % 2 == 0 else min(centre, (extent - 1) // rate)
    window.append(slice(centre - reach, size - centre + reach))
  if all(part.stop - part.start == size for part, size in zip(window, kernel.shape[:2])):
    return kernel
  return kernel[window[0], window[1]]


def _same_padding(kernel_size: tuple[int, int], rates: tuple[int, int]) -> list[list[int]]:
  """TensorFlow's "same" padding of a stride-1 convolution, NHWC (the odd zero goes after)."""
  rows, cols = (rate * (size - 1) for size, rate in zip(kernel_size, rates))
  return [[0, 0], [rows // 2, rows - rows // 2], [cols // 2, cols - cols // 2], [0, 0]]


def _pads_same(gradient):
  """Lets a filter gradient written for "VALID" take TensorFlow's "SAME" by padding its input."""

  @functools.wraps(gradient)
  def padded(inputs, output_gradient, kernel_size: tuple[int, int], rates: tuple[int, int],
             padding: str):
    if padding == "SAME":
      inputs = tf.pad(inputs, _same_padding(kernel_size, rates))
    return gradient(inputs, output_gradient, kernel_size, rates)
  return padded


@_pads_same
def filter_gradient(inputs, output_gradient, kernel_size: tuple[int, int],
                    rates: tuple[int, int]):
  """dLoss/dkernel of a stride-1 convolution: im2col columns of `inputs` times the output gradient.

  Args:
    inputs: [B, H, W, C_in].
    output_gradient: [B, H', W', C_out].
    kernel_size: (kh, kw).
    rates: Dilation (rows, cols).
    padding: "VALID" or "SAME" (TensorFlow's: the odd zero goes after; `_pads_same` pads).

  Returns:
    [kh, kw, C_in, C_out], in the inputs' dtype.
  """
  (kh, kw), (rh, rw) = kernel_size, rates
  height, width = tf.shape(output_gradient)[1], tf.shape(output_gradient)[2]
  taps = [inputs[:, i * rh:i * rh + height, j * rw:j * rw + width, :]
          for i in range(kh) for j in range(kw)]
  channels_in, channels_out = inputs.shape[-1], output_gradient.shape[-1]
  columns = tf.reshape(tf.concat(taps, -1) if len(taps) > 1 else taps[0],
                       (-1, kh * kw * channels_in))
  gradient = tf.matmul(columns, tf.reshape(output_gradient, (-1, channels_out)), transpose_a=True)
  return tf.reshape(gradient, (kh, kw, channels_in, channels_out))


@_pads_same
def padded_filter_gradient(inputs, output_gradient, kernel_size: tuple[int, int],
                           rates: tuple[int, int]):
  """`filter_gradient`'s arguments and result, computed by oneDNN's backward-weights kernel on an
  explicitly padded input."""
  return tf.raw_ops.Conv2DBackpropFilter(
      input=inputs, filter_sizes=[*kernel_size, inputs.shape[-1], output_gradient.shape[-1]],
      out_backprop=output_gradient, strides=[1, 1, 1, 1], padding="VALID",
      dilations=[1, *rates, 1])


def onednn_gemm_filter_gradient(inputs, kernel_size: tuple[int, int], rates: tuple[int, int],
                                padding: str) -> bool:
  """Whether oneDNN 3.7 would take this convolution's filter gradient with its gemm fallback.

  Args:
    inputs: The convolution's input (its static height decides; unknown: False).
    kernel_size: (kh, kw).
    rates: Dilation (rows, cols).
    padding: "valid" or "same".

  Returns:
    True on a CPU running oneDNN for "same" padding and a dilated kernel taller than the map.
  """
  height = inputs.shape[1]
  if padding.upper() != "SAME" or height is None or not _onednn_cpu(inputs):
    return False
  return (kernel_size[0] - 1) * rates[0] + 1 > height


def _conv2d_with_filter_gradient(inputs, kernel, rates: tuple[int, int], padding: str,
                                 kernel_gradient):
  """tf.nn.conv2d whose filter gradient is `kernel_gradient` (`filter_gradient`'s signature)."""

  @tf.custom_gradient
  def conv(x, w):
    def gradient(dy):
      dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=w, out_backprop=dy,
                                          strides=[1, 1, 1, 1], padding=padding,
                                          dilations=[1, *rates, 1])
      return dx, kernel_gradient(x, dy, tuple(w.shape[:2]), rates, padding)
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
  kernel = live_taps(kernel, tuple(inputs.shape[1:3]), rates, padding)
  kernel_size = tuple(kernel.shape[:2])
  if matmul_filter_gradient(inputs, kernel_size, rates, padding):
    return _conv2d_with_filter_gradient(inputs, ops.cast(kernel, inputs.dtype), rates,
                                        padding.upper(), filter_gradient)
  if rates == (1, 1) or not native_dilation(inputs):
    return ops.conv(inputs, kernel, strides=1, padding=padding, dilation_rate=rates)
  if onednn_gemm_filter_gradient(inputs, kernel_size, rates, padding):
    return _conv2d_with_filter_gradient(inputs, ops.cast(kernel, inputs.dtype), rates,
                                        padding.upper(), padded_filter_gradient)
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
