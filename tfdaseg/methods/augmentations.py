"""Strong augmentations applied inside the training step (DACS / DAFormer / MIC), stateless.

DAFormer (github.com/lhoyer/DAFormer @ e6f6e04) augments each mixed image with
`strong_transform` (mmseg/models/utils/dacs_transforms.py:11-23): colour jitter
(kornia 0.5.8 `ColorJitter`, the version pinned in its requirements.txt:6), then a Gaussian blur.
Here every random draw is a `tf.random.stateless_*` op of an explicit seed (int32/int64 [2]), so
that a resumed run draws the same augmentations as an uninterrupted one and the ops compile under
XLA (`tf.function(jit_compile=True)`). The Philox algorithm is named explicitly ("auto_select" may
pick another generator on another device or under XLA, which would change the draws).

Which draws are shared, as in DAFormer (mmseg/models/uda/dacs.py):
  * Whether colour jitter is applied, and whether blur is applied, is drawn ONCE per batch:
    `strong_parameters` (dacs.py:223-231) holds `random.uniform(0, 1)` for both and is reused for
    every image of the loop at dacs.py:293-301.
  * The jitter factors, the jitter order and the blur sigma are drawn PER IMAGE: `strong_transform`
    runs once per image (batch of 1), so kornia's generator and `np.random.uniform` (blur sigma,
    dacs_transforms.py:73) draw anew for each.

Not matched exactly: the random numbers themselves (Philox here, torch's / numpy's generators
there; the distributions match), float rounding (separable blur passes instead of kornia's 2D
kernel, channels-last HSV round trips), and the batch-level decisions are per call of these ops:
per replica and sub-batch when the trainer gives each its own seed, where DAFormer (one GPU) has
one per step.

Images are the training step's Caffe-preprocessed ones (float32 [B, H, W, 3], BGR, minus the
Caffe mean, 0..255, `tfdaseg.data.preprocessing`). Colour jitter works, as DAFormer's does
(dacs_transforms.py:63-65, `denorm_` / `renorm_`), on 0..1 RGB.
"""

import dataclasses
import itertools
import math
from typing import Mapping, Sequence

import tensorflow as tf

from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN, caffe_preprocess

# Named, not "auto_select": the same draws eagerly, under XLA and on any device.
_ALG = "philox"

# No Python control flow on tensors here: autograph's conversion of this module, when a training
# step's tf.function calls it, would only cost time (about 7 s of tracing for `strong_augment`).
_no_autograph = tf.autograph.experimental.do_not_convert

# kornia's ColorJitter keys, in the index order of its `order` permutation
# (kornia 0.5.8 kornia/augmentation/augmentation.py:252-257: 0 brightness, 1 contrast,
# 2 saturation, 3 hue).
JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")

JitterStrength = float | Mapping[str, float | tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class StrongAugmentConfig:
  """DAFormer's strong-augmentation settings (configs/_base_/uda/dacs.py:17-19).

  Attributes:
    color_jitter_strength: kornia ColorJitter strength s for all four factors
      (`color_jitter_strength`, dacs.py:69), or a per-factor mapping (dacs_transforms.py:57-58).
    color_jitter_probability: DAFormer's threshold p: jitter is applied when U(0, 1) > p
      (dacs_transforms.py:56), i.e. with probability 1 - p = 0.8 for the default 0.2.
    blur: Whether blur is used at all (`blur`, dacs.py:228: 0 when off, so never applied).
    blur_probability: Probability of blurring the batch (DAFormer: `blur > 0.5`, 0.5).
    blur_sigma_range: Range of the uniform sigma draw (dacs_transforms.py:73).
    blur_kernel_fraction: Kernel size as a fraction of the image side (dacs_transforms.py:74-81).
  """
  color_jitter_strength: JitterStrength = 0.2
  color_jitter_probability: float = 0.2
  blur: bool = True
  blur_probability: float = 0.5
  blur_sigma_range: tuple[float, float] = (0.15, 1.15)
  blur_kernel_fraction: float = 0.1


# --- seeds and shapes ---------------------------------------------------------------------------


def _split(seed: tf.Tensor, num: int) -> list[tf.Tensor]:
  """`num` independent [2] seeds derived from `seed`."""
  return tf.unstack(tf.random.experimental.stateless_split(seed, num, alg=_ALG))


def _bits(shape, seed: tf.Tensor) -> tf.Tensor:
  """uint32 Philox bits of `shape`.

  Each op draws all it needs in ONE such call: XLA expands every Philox op into a large
  computation (about 1 s of compile time each on CPU).
  """
  return tf.random.stateless_uniform(shape, seed, minval=None, maxval=None, dtype=tf.uint32,
                                     alg=_ALG)


def _unit(bits: tf.Tensor) -> tf.Tensor:
  """uint32 bits -> float32 U[0, 1), the same eagerly and under XLA.

  The Philox bits agree eagerly and under XLA, but `stateless_uniform`'s own float conversion
  does not (TF 2.21 CPU: other numbers under jit_compile for the same seed). The top 24 bits
  give a float32 in [0, 1) exactly.
  """
  return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * 2.0**-24


def _batch_and_image_draws(seed: tf.Tensor, batch_size: tf.Tensor,
                           columns: int) -> tuple[tf.Tensor, tf.Tensor]:
  """One Philox draw: row 0 for the batch's decision, rows 1..B per image.

  Philox numbers element i*columns + c, so image i's draws do not depend on the batch size.

  Returns:
    (uint32 [columns] of the batch, uint32 [B, columns] per image).
  """
  bits = _bits([batch_size + 1, columns], seed)
  return bits[0], bits[1:]


def _batch_size(images: tf.Tensor) -> tf.Tensor:
  return tf.shape(images)[0]


def _per_image(values: tf.Tensor, rank: int) -> tf.Tensor:
  """[B] -> [B, 1, ..., 1] of `rank` dims, to broadcast a per-image value over its pixels."""
  return tf.reshape(values, tf.concat([[-1], tf.ones([rank - 1], tf.int32)], axis=0))


# --- Caffe <-> 0..1 RGB -------------------------------------------------------------------------


@_no_autograph
def caffe_to_rgb01(images: tf.Tensor) -> tf.Tensor:
  """Caffe BGR minus mean -> float 0..1 RGB (DAFormer's `denorm_`, dacs_transforms.py:44-45).

  Not `caffe_unpreprocess`: that rounds to uint8, which would quantise the (non-integer) mixed
  images; this is the exact float inverse of `caffe_preprocess`.

  Args:
    images: float [..., 3] Caffe-preprocessed images.

  Returns:
    float32 [..., 3] RGB images, 0..1 for images that came from 0..255 RGB.
  """
  bgr = tf.cast(images, tf.float32) + tf.constant(CAFFE_BGR_MEAN, tf.float32)
  return tf.reverse(bgr, axis=[-1]) / 255.0


@_no_autograph
def rgb01_to_caffe(rgb: tf.Tensor) -> tf.Tensor:
  """0..1 RGB -> Caffe BGR minus mean (DAFormer's `renorm_`, dacs_transforms.py:48-49).

  Args:
    rgb: float [..., 3] RGB images in 0..1.

  Returns:
    float32 [..., 3] images as `caffe_preprocess` gives them.
  """
  return caffe_preprocess(rgb * 255.0)


# --- colour jitter (kornia 0.5.8 semantics) -----------------------------------------------------


@_no_autograph
def rgb_to_hsv(rgb: tf.Tensor, eps: float = 1e-6) -> tf.Tensor:
  """kornia 0.5.8 `rgb_to_hsv` (kornia/color/hsv.py:7-66), channels last.

  Args:
    rgb: float [..., 3] RGB in 0..1.
    eps: kornia's stabiliser of the saturation's division (s = delta / (v + eps), hsv.py:46).

  Returns:
    [..., 3] HSV: hue in [0, 2 pi), saturation and value in 0..1.
  """
  r, g, b = tf.unstack(rgb, axis=-1)
  maxc = tf.reduce_max(rgb, axis=-1)
  minc = tf.reduce_min(rgb, axis=-1)
  delta = maxc - minc
  s = delta / (maxc + eps)
  delta = tf.where(delta == 0, tf.ones_like(delta), delta)
  rc, gc, bc = maxc - r, maxc - g, maxc - b
  # The first channel holding the maximum picks the formula (kornia's cumsum trick, hsv.py:37-38).
  h = tf.where(r == maxc, bc - gc,
               tf.where(g == maxc, 2.0 * delta + rc - bc, 4.0 * delta + gc - rc))
  h = tf.math.floormod(h / delta / 6.0, 1.0) * (2.0 * math.pi)  # torch `%` is a floor mod
  return tf.stack([h, s, maxc], axis=-1)


@_no_autograph
def hsv_to_rgb(hsv: tf.Tensor) -> tf.Tensor:
  """kornia 0.5.8 `hsv_to_rgb` (kornia/color/hsv.py:69-106), channels last.

  Args:
    hsv: float [..., 3] HSV, hue in radians (any real: it is taken modulo 2 pi).

  Returns:
    [..., 3] RGB.
  """
  h, s, v = tf.unstack(hsv, axis=-1)
  h6 = h / (2.0 * math.pi) * 6.0
  hi = tf.math.floormod(tf.floor(h6), 6.0)
  f = tf.math.floormod(h6, 6.0) - hi
  p = v * (1.0 - s)
  q = v * (1.0 - f * s)
  t = v * (1.0 - (1.0 - f) * s)
  # The sector -> (r, g, b) table of hsv.py:103, selected with a one-hot (exact, XLA friendly).
  sector = tf.one_hot(tf.cast(hi, tf.int32), 6, dtype=hsv.dtype)
  r = tf.reduce_sum(tf.stack([v, q, p, p, t, v], axis=-1) * sector, axis=-1)
  g = tf.reduce_sum(tf.stack([t, v, v, q, p, p], axis=-1) * sector, axis=-1)
  b = tf.reduce_sum(tf.stack([p, p, t, v, v, q], axis=-1) * sector, axis=-1)
  return tf.stack([r, g, b], axis=-1)


def _adjust_brightness(rgb: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  # kornia adds (factor - 1) and clamps (augmentation.py:253, enhance/adjust.py:376-379): additive.
  return tf.clip_by_value(rgb + _per_image(factor - 1.0, 4), 0.0, 1.0)


def _adjust_contrast(rgb: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  # kornia 0.5.8 scales and clamps (adjust.py:320-323), no blend with the mean (unlike torchvision).
  return tf.clip_by_value(rgb * _per_image(factor, 4), 0.0, 1.0)


def _adjust_saturation_or_hue(rgb: tf.Tensor, saturation: tf.Tensor, hue: tf.Tensor,
                              use_saturation: tf.Tensor) -> tf.Tensor:
  """kornia's adjust_saturation where `use_saturation`, else its adjust_hue (one HSV round trip).

  Saturation: HSV saturation scaled and clamped (adjust.py:62). Hue: factor in turns, x 2 pi
  (augmentation.py:256), then torch.fmod, a truncated mod (adjust.py:141).
  """
  h, s, v = tf.unstack(rgb_to_hsv(rgb), axis=-1)
  saturated = tf.clip_by_value(s * _per_image(saturation, 3), 0.0, 1.0)
  shifted = tf.truncatemod(h + _per_image(hue, 3) * (2.0 * math.pi), 2.0 * math.pi)
  use_saturation = use_saturation[..., 0]
  hsv = tf.stack([tf.where(use_saturation, h, shifted), tf.where(use_saturation, saturated, s), v],
                 axis=-1)
  return hsv_to_rgb(hsv)


@_no_autograph
def apply_color_jitter(rgb: tf.Tensor, brightness: tf.Tensor, contrast: tf.Tensor,
                       saturation: tf.Tensor, hue: tf.Tensor, order: tf.Tensor) -> tf.Tensor:
  """kornia 0.5.8 `ColorJitter.apply_transform` with given factors (augmentation.py:249-264).

  Args:
    rgb: float32 [B, H, W, 3] RGB in 0..1.
    brightness: [B] kornia brightness factors (centred on 1; adds factor - 1).
    contrast: [B] contrast factors (multiplies).
    saturation: [B] saturation factors (multiplies HSV saturation).
    hue: [B] hue factors in turns (adds factor * 2 pi to the HSV hue).
    order: int [B, 4], per image a permutation of 0..3 (indices into `JITTER_KEYS`): the order
      in which the four adjustments run.

  Returns:
    float32 [B, H, W, 3] jittered RGB in 0..1.
  """
  order = tf.cast(order, tf.int32)

  # The order differs per image; with no per-image control flow under XLA, every step computes
  # the candidates and each image keeps the one its permutation names (saturation and hue share
  # one HSV round trip, as only one of them can be chosen).
  def step(position: tf.Tensor, out: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    chosen = _per_image(tf.gather(order, position, axis=1), 4)
    hsv_adjusted = _adjust_saturation_or_hue(out, saturation, hue, chosen == 2)
    out = tf.where(chosen == 0, _adjust_brightness(out, brightness),
                   tf.where(chosen == 1, _adjust_contrast(out, contrast), hsv_adjusted))
    return position + 1, out

  # A loop, not four unrolled steps: unrolled, XLA fuses (and recomputes) the whole chain, which
  # took ~10x longer to compile.
  _, out = tf.while_loop(lambda position, _: position < len(JITTER_KEYS), step,
                         (tf.constant(0), tf.convert_to_tensor(rgb, tf.float32)))
  return out


def jitter_ranges(strength: JitterStrength) -> dict[str, tuple[float, float]]:
  """kornia's factor ranges for ColorJitter(brightness=..., ...) (`_range_bound`).

  A number s gives [1 - s, 1 + s] clamped to (0, 2) for brightness, to (0, inf) for contrast and
  saturation, and [-s, s] clamped to (-0.5, 0.5) for hue (augmentation.py:235-244,
  utils/param_validation.py:33-34); a (low, high) pair is used as it is. A mapping gives each
  factor its own strength (DAFormer's dict form, dacs_transforms.py:57-58); missing ones are 0
  (kornia's defaults: no change).

  Args:
    strength: One strength for all four factors, or a mapping from `JITTER_KEYS` to strengths.

  Returns:
    `JITTER_KEYS` -> (low, high) of the uniform draw, in kornia's units.
  """
  if isinstance(strength, Mapping):
    unknown = set(strength) - set(JITTER_KEYS)
    if unknown:
      raise ValueError(f"Unknown colour-jitter factors {sorted(unknown)}; known: {JITTER_KEYS}")
    per_key = {key: strength.get(key, 0.0) for key in JITTER_KEYS}
  else:
    per_key = {key: strength for key in JITTER_KEYS}
  centres = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0}
  bounds = {"brightness": (0.0, 2.0), "contrast": (0.0, math.inf), "saturation": (0.0, math.inf),
            "hue": (-0.5, 0.5)}
  ranges = {}
  for key, value in per_key.items():
    if isinstance(value, Sequence):
      low, high = (float(v) for v in value)
    else:
      if value < 0:
        raise ValueError(f"Colour-jitter {key} strength must be non-negative, got {value}")
      low = min(max(centres[key] - value, bounds[key][0]), bounds[key][1])
      high = min(max(centres[key] + value, bounds[key][0]), bounds[key][1])
    ranges[key] = (low, high)
  return ranges


@_no_autograph
def jitter_parameters(bits: tf.Tensor,
                      strength: JitterStrength = 0.2) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-image jitter factors and order from uint32 bits [B, 5], as kornia draws them.

  kornia draws each factor uniformly in its range (random_generator.py:96-99) and the order as a
  uniform random permutation (`torch.randperm(4)`, random_generator.py:106); DAFormer calls it
  once per image, so both are per image here. The permutation is one of the 24, picked from the
  fifth column of bits (bias 2^-28 from the modulo; no sort, which XLA compiles slowly on CPU).

  Args:
    bits: uint32 [B, 5] random bits per image.
    strength: As for `jitter_ranges`.

  Returns:
    (factors, order): float32 [B, 4] factors (columns in `JITTER_KEYS` order, kornia's units) and
    int32 [B, 4] permutations.
  """
  ranges = jitter_ranges(strength)
  low = tf.constant([ranges[key][0] for key in JITTER_KEYS], tf.float32)
  high = tf.constant([ranges[key][1] for key in JITTER_KEYS], tf.float32)
  factors = low + (high - low) * _unit(bits[:, :4])
  table = tf.constant(list(itertools.permutations(range(len(JITTER_KEYS)))), tf.int32)
  index = tf.math.floormod(bits[:, 4], tf.constant(table.shape[0], tf.uint32))
  return factors, tf.gather(table, tf.cast(index, tf.int32))


@_no_autograph
def color_jitter(images: tf.Tensor, seed: tf.Tensor, strength: JitterStrength = 0.2,
                 probability: float = 0.2) -> tf.Tensor:
  """DAFormer's `color_jitter` (dacs_transforms.py:52-66) of Caffe-preprocessed images.

  kornia 0.5.8 `ColorJitter(brightness=s, contrast=s, saturation=s, hue=s)`: per image, a random
  order of: brightness (additive, factor - 1 in [-s, s]), contrast (multiplicative, no mean), HSV
  saturation (multiplicative), HSV hue (shift of up to s turns), each clamping to 0..1 as kornia
  does; done in 0..1 RGB (denormalised as DAFormer does) and brought back to Caffe form. There is
  no other clamp (DAFormer has none either).

  Not matched exactly: the random numbers (the distributions are kornia's), float rounding of
  the HSV round trips (ops on channels last instead of torch's channels first).

  Args:
    images: float32 [B, H, W, 3] Caffe-preprocessed (BGR minus mean) images.
    seed: int32/int64 [2] stateless seed.
    strength: kornia strength s for all four factors, or a per-factor mapping (see
      `jitter_ranges`).
    probability: DAFormer's threshold p, in its convention: the batch is jittered when
      U(0, 1) > p (dacs_transforms.py:56), so with probability 1 - p (0.8 for DAFormer's 0.2);
      1 disables the jitter. One draw for the whole batch, as in DAFormer (dacs.py:225).

  Returns:
    float32 [B, H, W, 3] Caffe-preprocessed images.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  batch_bits, image_bits = _batch_and_image_draws(seed, _batch_size(images), 5)
  apply = _unit(batch_bits[0]) > probability
  factors, order = jitter_parameters(image_bits, strength)
  jittered = apply_color_jitter(caffe_to_rgb01(images), *tf.unstack(factors, axis=1), order)
  return tf.where(apply, rgb01_to_caffe(jittered), images)


# --- Gaussian blur (kornia 0.5.8 GaussianBlur2d) ------------------------------------------------


@_no_autograph
def blur_kernel_size(length: int | tf.Tensor, kernel_fraction: float = 0.1) -> int | tf.Tensor:
  """DAFormer's kernel size for a side of `length` pixels (dacs_transforms.py:74-81).

  floor(ceil(f * n) - 0.5 + ceil(f * n) % 2): ceil(f * n) if it is odd, else one less (e.g. 51
  for 512, 103 for 1024). Computed in float64, as numpy does (so 0.1 * 30 -> ceil 4 -> 3, too).

  Args:
    length: The image side n: a Python int (the static shape: gives a Python int, the kernel's
      size is then static, which XLA needs) or an int tensor (a dynamic shape: gives a tensor).
    kernel_fraction: f, 0.1 in DAFormer.

  Returns:
    The odd kernel size, a Python int or an int32 scalar tensor.
  """
  if isinstance(length, int):
    ceil = math.ceil(kernel_fraction * length)
    return int(math.floor(ceil - 0.5 + ceil % 2))
  ceil = tf.math.ceil(tf.cast(length, tf.float64) * kernel_fraction)
  return tf.cast(tf.floor(ceil - 0.5 + tf.math.floormod(ceil, 2.0)), tf.int32)


def _gaussian_weights(size: int | tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
  """[B, size] normalised Gaussian taps (kornia 0.5.8 kernels.py:15-23, size odd)."""
  x = tf.cast(tf.range(size) - size // 2, tf.float32)
  weights = tf.exp(-tf.square(x)[tf.newaxis] / (2.0 * tf.square(sigma)[:, tf.newaxis]))
  return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _window(padded: tf.Tensor, start, length, axis: int) -> tf.Tensor:
  """`padded[start:start + length]` along `axis` (start, length: ints or scalar tensors)."""
  begin = [0, 0, 0, 0]
  size = [-1, -1, -1, -1]
  begin[axis], size[axis] = start, length
  return tf.slice(padded, tf.stack(begin), tf.stack(size))


def _blur_axis(images: tf.Tensor, sigma: tf.Tensor, axis: int, kernel_fraction: float) -> tf.Tensor:
  """One separable pass of a per-image Gaussian along `axis` (1: H, 2: W), reflect borders."""
  length = images.shape[axis]
  if length is None:
    length = tf.shape(images)[axis]
  size = blur_kernel_size(length, kernel_fraction)
  radius = size // 2
  weights = _gaussian_weights(size, sigma)
  paddings = [[0, 0], [0, 0], [0, 0], [0, 0]]
  paddings[axis] = [radius, radius]
  # kornia pads with torch's "reflect" (edge not repeated, gaussian.py:41, filter.py:98): the same
  # as tf.pad's REFLECT.
  padded = tf.pad(images, tf.stack([tf.stack(p) for p in paddings]), mode="REFLECT")
  if isinstance(size, int):
    # Static size: an unrolled sum of shifted windows, which XLA fuses into one kernel.
    out = tf.zeros_like(images)
    for tap in range(size):
      out += _per_image(weights[:, tap], 4) * _window(padded, tap, length, axis)
    return out

  # Dynamic size (H or W unknown when traced; not under XLA, which needs static shapes).
  def body(tap, out):
    tap_weights = _per_image(tf.gather(weights, tap, axis=1), 4)
    return tap + 1, out + tap_weights * _window(padded, tap, length, axis)

  _, out = tf.while_loop(lambda tap, _: tap < size, body, (tf.constant(0), tf.zeros_like(images)))
  return out


@_no_autograph
def blur_with_sigma(images: tf.Tensor, sigma: tf.Tensor | float,
                    kernel_fraction: float = 0.1) -> tf.Tensor:
  """kornia 0.5.8 `GaussianBlur2d((k_y, k_x), (sigma, sigma))` with DAFormer's kernel sizes.

  k_y from H and k_x from W (`blur_kernel_size`, dacs_transforms.py:74-85), the sampled,
  normalised Gaussian of kornia (kernels.py:15-23, outer product at kernels.py:460, applied here
  as two separable passes: the same up to float rounding), reflect borders. The sizes come from the
  static H, W when known (needed under XLA), else from the dynamic shape (a while loop).

  Blurring the Caffe-normalised image equals blurring the 0..1 RGB one (taps sum to 1, reflect
  padding commutes with the per-channel affine map); DAFormer also blurs the normalised data.

  Args:
    images: float32 [B, H, W, C] images (any per-channel affine normalisation).
    sigma: The Gaussian's standard deviation: a scalar or one per image, [B].
    kernel_fraction: Kernel size as a fraction of the side (0.1 in DAFormer).

  Returns:
    float32 [B, H, W, C] blurred images.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), [_batch_size(images)])
  out = _blur_axis(images, sigma, 1, kernel_fraction)
  return _blur_axis(out, sigma, 2, kernel_fraction)


@_no_autograph
def gaussian_blur(images: tf.Tensor, seed: tf.Tensor, probability: float = 0.5,
                  sigma_range: tuple[float, float] = (0.15, 1.15),
                  kernel_fraction: float = 0.1) -> tf.Tensor:
  """DAFormer's `gaussian_blur` (dacs_transforms.py:69-87) of a batch.

  Args:
    images: float32 [B, H, W, C] images.
    seed: int32/int64 [2] stateless seed.
    probability: Probability of blurring the batch; 0 disables it. One draw for the whole batch
      (DAFormer: `blur > 0.5` with one `random.uniform(0, 1)` per step, dacs.py:228 and
      dacs_transforms.py:72; U < p here, the same probability).
    sigma_range: sigma ~ U(low, high), drawn per image (dacs_transforms.py:73, once per image).
    kernel_fraction: Kernel size as a fraction of the image side (`blur_kernel_size`).

  Returns:
    float32 [B, H, W, C] images.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  batch_bits, image_bits = _batch_and_image_draws(seed, _batch_size(images), 1)
  apply = _unit(batch_bits[0]) < probability
  low, high = sigma_range
  sigma = low + (high - low) * _unit(image_bits[:, 0])
  return tf.where(apply, blur_with_sigma(images, sigma, kernel_fraction), images)


# --- flip and the whole strong augmentation -----------------------------------------------------


def _flip_where(tensor: tf.Tensor, flip: tf.Tensor) -> tf.Tensor:
  tensor = tf.convert_to_tensor(tensor)
  if tensor.shape.rank is None or tensor.shape.rank < 3:
    raise ValueError(f"Expected [B, H, W] or [B, H, W, C], got shape {tensor.shape}")
  return tf.where(_per_image(flip, tensor.shape.rank), tf.reverse(tensor, axis=[2]), tensor)


@_no_autograph
def random_flip(images: tf.Tensor, seed: tf.Tensor, *others: tf.Tensor,
                probability: float = 0.5) -> tuple[tf.Tensor, ...]:
  """Horizontal flip of each image with `probability`, the same flip for the extra maps.

  DAFormer flips in its data pipeline (mmseg RandomFlip, prob 0.5 per image), not in the step;
  this is the stateless in-step equivalent.

  Args:
    images: [B, H, W, C] images.
    seed: int32/int64 [2] stateless seed.
    *others: Per-pixel maps of the same images, [B, H, W] or [B, H, W, C] (labels, weights, ...):
      flipped where their image is.
    probability: Probability of flipping each image (independently per image).

  Returns:
    (images, *others), flipped along W where drawn.
  """
  flip = _unit(_bits([_batch_size(images)], seed)) < probability
  return tuple(_flip_where(tensor, flip) for tensor in (images, *others))


@_no_autograph
def strong_augment(images: tf.Tensor, seed: tf.Tensor,
                   config: StrongAugmentConfig = StrongAugmentConfig()) -> tf.Tensor:
  """DAFormer's `strong_transform` without the mixing (dacs_transforms.py:11-23): jitter, then blur.

  The mixing (`one_mix`) is the caller's; this augments already-mixed images.

  Args:
    images: float32 [B, H, W, 3] Caffe-preprocessed images.
    seed: int32/int64 [2] stateless seed; split so that jitter and blur draw independently.
    config: The settings (DAFormer's by default).

  Returns:
    float32 [B, H, W, 3] Caffe-preprocessed augmented images.
  """
  jitter_seed, blur_seed = _split(seed, 2)
  images = color_jitter(images, jitter_seed, config.color_jitter_strength,
                        config.color_jitter_probability)
  if config.blur:
    images = gaussian_blur(images, blur_seed, config.blur_probability, config.blur_sigma_range,
                           config.blur_kernel_fraction)
  return images
