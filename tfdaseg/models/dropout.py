"""Stateless dropout layers whose random draws are a function of their input: stochastic depth
(timm's `DropPath`) and channel dropout (PyTorch's `Dropout2d`), as the MiT encoder and the
SegFormer / DAFormer heads use them.

Keras' own dropout draws from a `SeedGenerator`, a variable that no checkpoint holds (so a
resumed run would draw other masks than an uninterrupted one, breaking `--deterministic`) and
that every replica shares (so all replicas would drop the same samples). Here the seed is a hash
of the input's bits and the layer's name, mixed by integer arithmetic only: the same input gives
the same mask eagerly, under XLA, on every run and after a resume, and different inputs (other
images, steps, replicas) give independent masks. The hash's integer mixing also avoids Philox,
which XLA expands into about a second of CPU compile time per op (104 drop paths in MiT-B5).

`without_training_randomness(model)` switches a model's dropout off in training mode, as DAFormer
does for its EMA teacher (mmseg/models/uda/dacs.py: `_DropoutNd` and `DropPath` modules set to
eval while BatchNorm stays in train mode), and any other layer with a `disable_randomness()`
method (HRDA's random detail window: the teacher takes the sliding windows).
"""

import zlib

import keras
import tensorflow as tf

# Murmur3's 32-bit finaliser constants and the golden-ratio increment (Weyl sequence), which
# spread consecutive indices over the whole uint32 range.
_MIX_1 = 0x85EBCA6B
_MIX_2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9


def _mix(bits: tf.Tensor) -> tf.Tensor:
  """Murmur3's finaliser: a bijection of uint32 whose output bits all depend on every input bit."""
  bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, tf.constant(16, tf.uint32)))
  bits = bits * tf.constant(_MIX_1, tf.uint32)
  bits = tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, tf.constant(13, tf.uint32)))
  bits = bits * tf.constant(_MIX_2, tf.uint32)
  return tf.bitwise.bitwise_xor(bits, tf.bitwise.right_shift(bits, tf.constant(16, tf.uint32)))


def input_seed(x: tf.Tensor, salt: int) -> tf.Tensor:
  """A uint32 seed from the bits of `x` and `salt`.

  Args:
    x: Any float tensor.
    salt: A per-layer constant, so that two layers seeing the same input draw differently.

  Returns:
    A uint32 scalar.
  """
  # An exact int64 sum of the 16/32-bit patterns: independent of the reduction order, so the
  # same eagerly and under XLA (a float sum is not).
  width = tf.int16 if x.dtype.size == 2 else tf.int32
  patterns = tf.cast(tf.bitcast(x, width), tf.int64)
  total = tf.reduce_sum(patterns)
  low = tf.cast(tf.bitwise.bitwise_and(total, 0xFFFFFFFF), tf.uint32)
  high = tf.cast(tf.bitwise.bitwise_and(tf.bitwise.right_shift(total, 32), 0xFFFFFFFF),
                 tf.uint32)
  return _mix(_mix(tf.bitwise.bitwise_xor(low, tf.constant(salt & 0xFFFFFFFF, tf.uint32)))
              + high)


def hashed_uniform(seed: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
  """float32 U[0, 1) of `shape`, element i = mix(seed + (i + 1) * golden).

  Args:
    seed: uint32 scalar (`input_seed`).
    shape: int32 [rank] output shape.

  Returns:
    The draws; the top 24 bits make each float exactly.
  """
  index = tf.cast(tf.range(1, tf.reduce_prod(shape) + 1), tf.uint32)
  bits = _mix(seed + index * tf.constant(_GOLDEN, tf.uint32))
  unit = tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * 2.0**-24
  return tf.reshape(unit, shape)


class _InputSeededDropout(keras.layers.Layer):
  """Base: drops with probability `rate` along a mask of `_mask_shape(x)`, rescaling by 1/keep.

  Args:
    rate: Drop probability in [0, 1).
    **kwargs: Base `keras.layers.Layer` arguments (the name salts the draws).
  """

  def __init__(self, rate: float, **kwargs):
    super().__init__(**kwargs)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"{type(self).__name__} rate must be in [0, 1), got {rate}")
    self.rate = float(rate)
    self._salt = zlib.crc32(self.name.encode())

  def _mask_shape(self, x: tf.Tensor) -> tf.Tensor:
    raise NotImplementedError

  def call(self, inputs, training=None):
    if not training or self.rate == 0.0:
      return inputs
    keep = 1.0 - self.rate
    draws = hashed_uniform(input_seed(inputs, self._salt), self._mask_shape(inputs))
    # timm's DropPath: floor(keep + U) is 1 with probability keep; PyTorch's dropout keeps
    # U >= rate: the same.
    mask = tf.cast(draws >= self.rate, inputs.dtype)
    return inputs * mask / tf.cast(keep, inputs.dtype)

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config["rate"] = self.rate
    return config


@keras.saving.register_keras_serializable(package="tfdaseg")
class DropPath(_InputSeededDropout):
  """Stochastic depth: drops a residual branch for whole samples (timm `DropPath`).

  Example:
    >>> layer = DropPath(0.5, name="drop")
    >>> x = keras.ops.ones((4, 2, 2, 3))
    >>> bool(keras.ops.all(layer(x, training=False) == x))
    True
  """

  def _mask_shape(self, x: tf.Tensor) -> tf.Tensor:
    return tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)


@keras.saving.register_keras_serializable(package="tfdaseg")
class ChannelDropout(_InputSeededDropout):
  """Drops whole channels of NHWC maps per sample (PyTorch `Dropout2d`; Keras'
  `SpatialDropout2D`)."""

  def _mask_shape(self, x: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(x)
    return tf.stack([shape[0], 1, 1, shape[-1]])


def without_training_randomness(model: keras.Model) -> keras.Model:
  """Sets every `DropPath` / `ChannelDropout` layer of `model` to rate 0 and calls
  `disable_randomness()` on every layer that has it, in place.

  Args:
    model: A model whose stochastic layers are top-level layers (any tfdaseg generator).

  Returns:
    `model`, which then computes the same in training mode as without dropout (BatchNorm still
    follows `training`).
  """
  for layer in model.layers:
    if isinstance(layer, _InputSeededDropout):
      layer.rate = 0.0
    elif hasattr(layer, "disable_randomness"):
      layer.disable_randomness()
  return model
