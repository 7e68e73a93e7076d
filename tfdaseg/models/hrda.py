"""HRDA (Hoyer et al., ECCV 2022): multi-resolution training and inference around a generator.

Reference: lhoyer/HRDA mmseg/models/segmentors/hrda_encoder_decoder.py (`HRDAEncoderDecoder`),
mmseg/models/decode_heads/hrda_head.py (`HRDAHead`), configs/hrda/gtaHR2csHR_hrda.py.

The wrapped generator (its encoder and head, shared) runs on two views of each image:
  * context: the whole image resized bilinearly by `context_scale` (0.5; `scales=[1, 0.5]`);
  * detail: full-resolution windows. In training one random window of `detail_crop` (512x512)
    per batch (`get_crop_bbox`: offsets multiples of `crop_divisible` = 8, so that the detail
    logits (stride 4) and the context logits (stride 8 of the full image) align); otherwise
    overlapping sliding windows with stride `detail_crop // 2` (`hr_slide_inference`,
    `hr_slide_overlapping`), averaged where they overlap (`HRDAHead.decode_hr`).
A scale-attention head on the context features (DAFormer's head with its ASPP fusion replaced by
a 1x1 conv + BN + ReLU, embedding 256: the SegFormer head's structure; class-wise, sigmoid)
fuses them (`HRDAHead.forward`):
  att = sigmoid(a) * [inside a detail window]   (context logit resolution)
  fused = up(att) * detail + up((1 - att) * context)   (up: bilinear x 1/context_scale)
where `detail` is 0 outside the windows. In training the window is random, so the attention is 0
outside it; with sliding windows they cover the image and the mask is 1.

Outputs: "logits" (the fused logits, stride 4 of the input), "features" (the context branch's
last encoder stage: HRDA's `feature_scale=0.5` for the feature distance), "detail_logits" (the
windows' logits placed on the fused map, 0 where no window lies) and "detail_box" ([B, 4]
(y1, y2, x1, x2) in input pixels: the extent of the windows) for the detail loss
(`tfdaseg.methods.base.segmentation_objective`: (1 - w) CE(fused) + w CE(detail on its crop)).

The random window is drawn from a hash of the input's bits (`tfdaseg.models.dropout`), so a step
draws the same window eagerly, under XLA and after a resume. `without_training_randomness`
switches it off: an EMA teacher then takes the sliding-window path in training mode, as HRDA's
`generate_pseudo_label` (`encode_decode`, with BatchNorm in train mode).

The result is one flat functional model: the wrapped generator's layers are applied to both
views (shared), so its layer names, ImageNet import, head learning rate and `.keras` files work
unchanged; the attention head's layers are "decode_head_scale_attention_*" (trained at the
head's learning rate, as HRDA's `decode_head.scale_attention` under custom_keys `head`).

Ours: the wrapped generator must be a MiT one (its four stages feed the attention head); HRDA's
DeepLab-v2 variant (`DLV2Head` attention) is not built. Windows smaller than `detail_crop` are
used when the image is smaller.
"""

import dataclasses
import inspect
import zlib
from typing import Any, Mapping

import keras
import tensorflow as tf

from tfdaseg.models import outputs as keys
from tfdaseg.models import sliding_window
from tfdaseg.models.daformer_head import DROPOUT, HEAD_PREFIX, segformer_head
from tfdaseg.models.dropout import hashed_uniform, input_seed

# The MiT encoder's stage outputs (mix_transformer.py `norm1` ... `norm4`).
_MIT_STAGES = tuple(f"norm{stage}" for stage in range(1, 5))
# The generators' logits stride (DAFormer's head: 1/4; HRDAHead `self.os = 4`).
OUTPUT_STRIDE = 4
ATTENTION_PREFIX = f"{HEAD_PREFIX}_scale_attention"


@dataclasses.dataclass(frozen=True)
class HrdaConfig:
  """HRDA's settings (configs/hrda/gtaHR2csHR_hrda.py and HRDAHead's defaults).

  Args:
    context_scale: Resize factor of the context view (`scales=[1, 0.5]`).
    detail_crop: (height, width) of the detail window (`hr_crop_size=[512, 512]`).
    crop_divisible: Training window offsets are multiples of this (`crop_coord_divisible=8`).
    overlapping_slide: Sliding detail windows at stride detail_crop // 2
      (`hr_slide_overlapping=True`); False: stride detail_crop.
    attention_embed_dim: Embedding and channels of the scale-attention head
      (`attention_embed_dim=256`).
    attention_classwise: One attention map per class (`attention_classwise=True`), else one.
  """

  context_scale: float = 0.5
  detail_crop: tuple[int, int] = (512, 512)
  crop_divisible: int = 8
  overlapping_slide: bool = True
  attention_embed_dim: int = 256
  attention_classwise: bool = True

  def __post_init__(self):
    if not 0.0 < self.context_scale <= 1.0 or (1.0 / self.context_scale) % 1:
      raise ValueError(f"HRDA context_scale must be 1/k for an integer k >= 1, got "
                       f"{self.context_scale}")
    if len(self.detail_crop) != 2 or min(self.detail_crop) < OUTPUT_STRIDE:
      raise ValueError(f"HRDA detail_crop must be (height, width) >= {OUTPUT_STRIDE}, got "
                       f"{self.detail_crop}")
    if self.crop_divisible < 1 or self.attention_embed_dim < 1:
      raise ValueError("HRDA crop_divisible and attention_embed_dim must be >= 1")

  @classmethod
  def from_options(cls, options: Mapping[str, Any]) -> "HrdaConfig":
    """From a JSON dict (`--hrda_options`); names the unknown keys."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
      raise ValueError(f"unknown HRDA options {unknown}; known: {', '.join(sorted(known))}")
    fields = dict(options)
    if "detail_crop" in fields:
      crop = fields["detail_crop"]
      fields["detail_crop"] = (crop, crop) if isinstance(crop, int) else tuple(crop)
    return cls(**fields)

  @property
  def upsampling(self) -> int:
    """How many times finer the detail logits are than the context logits (2)."""
    return round(1.0 / self.context_scale)

  @property
  def slide_stride(self) -> tuple[int, int]:
    """Stride of the sliding detail windows."""
    if self.overlapping_slide:
      return (self.detail_crop[0] // 2, self.detail_crop[1] // 2)
    return self.detail_crop


@keras.saving.register_keras_serializable(package="tfdaseg")
class ContextResize(keras.layers.Layer):
  """Bilinear resize by `scale` (mmseg `resize(scale_factor=s, align_corners=False)`: torch's
  F.interpolate without antialiasing, TF's half-pixel centres); the size is floor(size * s)."""

  def __init__(self, scale: float, **kwargs):
    super().__init__(**kwargs)
    self.scale = float(scale)

  def call(self, images):
    size = tf.cast(tf.floor(tf.cast(tf.shape(images)[1:3], tf.float32) * self.scale), tf.int32)
    return tf.cast(tf.image.resize(images, size, method="bilinear"), images.dtype)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], None, None, input_shape[3])

  def get_config(self):
    return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="tfdaseg")
class DetailWindows(keras.layers.Layer):
  """The detail view: one random window per batch in training, sliding windows otherwise.

  Args:
    crop: (height, width) of a window.
    stride: (height, width) of the sliding windows.
    divisible: Training offsets are multiples of this.
    random_crop: Whether training draws a random window (False: sliding windows always, for a
      teacher; `disable_randomness`).
    **kwargs: Base layer arguments (the name salts the draw).

  Call returns ([n * B, h, w, C] windows, windows major; int32 [n, 4] (y1, y2, x1, x2)).
  """

  def __init__(self, crop: tuple[int, int], stride: tuple[int, int], divisible: int,
               random_crop: bool = True, **kwargs):
    super().__init__(**kwargs)
    self.crop, self.stride = tuple(crop), tuple(stride)
    self.divisible = int(divisible)
    self.random_crop = bool(random_crop)
    self._salt = zlib.crc32(self.name.encode())

  def disable_randomness(self) -> None:
    """Sliding windows in training mode too (a teacher's pseudo-labels)."""
    self.random_crop = False

  def random_box(self, images: tf.Tensor) -> tf.Tensor:
    """HRDA `get_crop_bbox`: offset randint(0, (margin + 1) // divisible) * divisible per axis,
    one box for the batch.

    Returns:
      int32 [1, 4] (y1, y2, x1, x2).
    """
    size = tf.shape(images)[1:3]
    extent = tf.stack([sliding_window.window_size(size[0], self.crop[0]),
                       sliding_window.window_size(size[1], self.crop[1])])
    choices = (size - extent + 1) // self.divisible
    draws = hashed_uniform(input_seed(images, self._salt), [2])
    start = tf.cast(tf.floor(draws * tf.cast(choices, tf.float32)), tf.int32) * self.divisible
    return tf.stack([start[0], start[0] + extent[0], start[1], start[1] + extent[1]])[tf.newaxis]

  def call(self, images, training=None):
    if training and self.random_crop:
      boxes = self.random_box(images)
    else:
      size = tf.shape(images)
      boxes = sliding_window.slide_boxes(size[1], size[2], self.crop, self.stride)
    return sliding_window.crop_windows(images, boxes), boxes

  def compute_output_shape(self, input_shape):
    return (None, None, None, input_shape[3]), (None, 4)

  def get_config(self):
    return {**super().get_config(), "crop": self.crop, "stride": self.stride,
            "divisible": self.divisible, "random_crop": self.random_crop}


@keras.saving.register_keras_serializable(package="tfdaseg")
class ScaleAttentionFusion(keras.layers.Layer):
  """HRDAHead.forward's fusion of context and detail logits (see the module docstring).

  Args:
    upsampling: Context-to-detail logit resolution factor (1 / context_scale).
    output_stride: Stride of the detail logits in input pixels (4).
    **kwargs: Base layer arguments.

  Call takes [context logits [B, h, w, C], attention logits [B, h, w, C or 1], window logits
  [n * B, h', w', C], int32 windows [n, 4]] and returns float32 (fused [B, kh, kw, C], detail
  [B, kh, kw, C], int32 box [B, 4]).
  """

  def __init__(self, upsampling: int, output_stride: int = OUTPUT_STRIDE, **kwargs):
    super().__init__(**kwargs)
    self.upsampling, self.output_stride = int(upsampling), int(output_stride)

  def call(self, inputs):
    context, attention, windows, boxes = inputs
    context = tf.cast(context, tf.float32)
    batch = tf.shape(context)[0]
    context_size = tf.shape(context)[1:3]
    size = context_size * self.upsampling
    # HRDAHead: the window in context-logit coordinates is box / (os / scale), truncated.
    mask = sliding_window.coverage(boxes // (self.output_stride * self.upsampling),
                                   context_size)
    att = tf.sigmoid(tf.cast(attention, tf.float32)) * mask[tf.newaxis, :, :, tf.newaxis]
    up_context = tf.image.resize((1.0 - att) * context, size, method="bilinear")
    up_att = tf.image.resize(att, size, method="bilinear")
    detail = sliding_window.merge_windows(windows, boxes[:, ::2] // self.output_stride, size)
    extent = tf.stack([tf.reduce_min(boxes[:, 0]), tf.reduce_max(boxes[:, 1]),
                       tf.reduce_min(boxes[:, 2]), tf.reduce_max(boxes[:, 3])])
    return up_att * detail + up_context, detail, tf.tile(extent[tf.newaxis], [batch, 1])

  def compute_output_shape(self, input_shape):
    context = input_shape[0]
    maps = (context[0], None, None, context[3])
    return maps, maps, (context[0], 4)

  def get_config(self):
    return {**super().get_config(), "upsampling": self.upsampling,
            "output_stride": self.output_stride}


def _apply(model: keras.Model, inputs):
  """Applies `model`'s layers to `inputs` in the graph being built: the same layer objects, so
  a functional model of the result shares them (flat, not nested)."""
  # Keras' clone_model(input_tensors=...) would wrap the tensors in new Input layers; the graph
  # walk it uses is the only way to re-apply a functional model's layers to inner tensors.
  return model._run_through_graph(inputs, operation_fn=lambda operation: operation)


def _stages(generator: keras.Model) -> list:
  try:
    return [generator.get_layer(name).output for name in _MIT_STAGES]
  except ValueError:
    raise ValueError(f"HRDA needs a MiT generator (its scale attention reads the encoder's four "
                     f"stages); {generator.name} has no layers {_MIT_STAGES}") from None


def multi_resolution(generator: keras.Model, config: HrdaConfig,
                     bn_mode: str = "train") -> keras.Model:
  """Wraps a MiT generator in HRDA's multi-resolution training and inference.

  Args:
    generator: A functional MiT generator ("daformer_mit_b5", ...) returning "logits" and
      "features".
    config: HRDA's settings.
    bn_mode: BatchNorm mode of the scale-attention head (the generator's).

  Returns:
    A functional model named as `generator` (its head learning rate and weight import follow):
    Caffe-preprocessed images -> {"logits", "features", "detail_logits", "detail_box"}.
  """
  context_view = keras.Model(generator.input, {
      keys.LOGITS: generator.output[keys.LOGITS], keys.FEATURES: generator.output[keys.FEATURES],
      **{name: tensor for name, tensor in zip(_MIT_STAGES, _stages(generator))}})
  detail_view = keras.Model(generator.input, generator.output[keys.LOGITS])
  num_classes = int(generator.output[keys.LOGITS].shape[-1])

  images = keras.Input(shape=generator.input.shape[1:], name="image")
  context = _apply(context_view, ContextResize(config.context_scale,
                                               name="hrda_context_resize")(images))
  attention = segformer_head([context[name] for name in _MIT_STAGES],
                             num_classes if config.attention_classwise else 1, bn_mode,
                             embed_dim=config.attention_embed_dim, dropout=DROPOUT,
                             prefix=ATTENTION_PREFIX)
  windows, boxes = DetailWindows(config.detail_crop, config.slide_stride, config.crop_divisible,
                                 name="hrda_detail_windows")(images)
  fused, detail, box = ScaleAttentionFusion(config.upsampling, name="hrda_fusion")(
      [context[keys.LOGITS], attention, _apply(detail_view, windows), boxes])
  return keras.Model(images, {keys.LOGITS: fused, keys.FEATURES: context[keys.FEATURES],
                              keys.DETAIL_LOGITS: detail, keys.DETAIL_BOX: box},
                     name=generator.name)


def default_bn_mode(factory) -> str:
  """The bn_mode a generator factory builds with when none is given."""
  return inspect.signature(factory).parameters["bn_mode"].default
