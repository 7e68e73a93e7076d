"""Dense prediction from a generator: resize to the model's input, run, upsample, average.

One code path serves evaluation, prediction, validation during training and the exported
SavedModel, so they agree pixel for pixel. Images are resized to the model's input size in the
graph with the training pipeline's filters (tfdaseg.data.resizing) on pixel values, by default
"bicubic" like the reference loaders (AdaptSegNet cityscapes_dataset.py:45: PIL BICUBIC to
1024x512), so evaluation feeds the model what validation's pipeline does. Logits are upsampled
bilinearly with aligned corners to the output size before the softmax (AdaptSegNet pytorch_0.4
evaluate_cityscapes.py: nn.Upsample(size=(1024, 2048), mode="bilinear", align_corners=True)),
and test-time augmentation averages the softmax over scales and horizontal flips. Optionally the
model runs on overlapping sliding windows of the resized image (mmseg's slide test mode, which
DAFormer's HRDA configs use).
"""

import dataclasses
from typing import Callable, Sequence

import keras
import tensorflow as tf

from tfdaseg.data import labels
from tfdaseg.data import resizing
from tfdaseg.data.preprocessing import CAFFE_BGR_MEAN, caffe_preprocess
from tfdaseg.models import outputs as keys
from tfdaseg.models import sliding_window
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.registry import Registry

# Callable: caffe-preprocessed float32 images [B, H, W, 3] -> the generator's output dict.
Forward = Callable[[tf.Tensor], dict[str, tf.Tensor]]


def keras_forward(generator: keras.Model) -> Forward:
  """The inference-mode forward function of a Keras generator."""
  return lambda images: generator(images, training=False)


IMAGE_RESIZERS: Registry = Registry("image resize method")


def _on_pixel_values(resize: resizing.Resize) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """Returns `resize` for Caffe-preprocessed images.

  It runs on pixel values (the mean added back), so that it rounds and clips as the training
  pipeline does before its preprocessing.
  """

  def resize_preprocessed(images: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    mean = tf.constant(CAFFE_BGR_MEAN, tf.float32)
    return resize(images + mean, size) - mean

  return resize_preprocessed


# The antialiased bicubic has no TFLite kernel; bilinear is a builtin op (RESIZE_BILINEAR).
IMAGE_RESIZERS.register("bicubic")(_on_pixel_values(resizing.resize_bicubic_like_pil))
IMAGE_RESIZERS.register("bilinear")(_on_pixel_values(resizing.resize_bilinear))


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
  """How to turn images into class probabilities.

  Args:
    input_size: (width, height) the model runs at, like the reference's `input_size` flag;
      None runs every image at its own size.
    scales: Test-time scales of `input_size` whose softmax outputs are averaged.
    flip: Whether to average with the horizontally flipped image too.
    resize: Name of the image resize method (IMAGE_RESIZERS; tfdaseg.data.resizing).
    slide_window: (width, height) of sliding windows the model runs on, their logits averaged
      where they overlap (mmseg's `test_cfg mode='slide'`: HRDA tests with 1024x1024 windows
      at stride 512); None runs the whole (resized) image at once.
    slide_stride: (width, height) step of the windows; None: half the window.
    align_corners: How logits are upsampled to the output size: with aligned corners as the
      DeepLab-v2 references' nn.Upsample, or half-pixel centres as mmseg's `resize` (DAFormer,
      HRDA); `models.output_conventions(generator).align_corners`.
  """

  input_size: tuple[int, int] | None = None
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  resize: str = resizing.DEFAULT_INTERPOLATION
  slide_window: tuple[int, int] | None = None
  slide_stride: tuple[int, int] | None = None
  align_corners: bool = True

  def __post_init__(self):
    if not self.scales or any(s <= 0 for s in self.scales):
      raise ValueError(f"scales must be positive, got {self.scales}")
    for name in ("input_size", "slide_window", "slide_stride"):
      size = getattr(self, name)
      if size is not None and (len(size) != 2 or min(size) <= 0):
        raise ValueError(f"{name} must be (width, height) > 0, got {size}")
    if self.slide_stride is not None and self.slide_window is None:
      raise ValueError("slide_stride needs slide_window")
    IMAGE_RESIZERS.get(self.resize)

  @property
  def window_stride(self) -> tuple[int, int]:
    """(height, width) step of the sliding windows."""
    if self.slide_stride is not None:
      return (self.slide_stride[1], self.slide_stride[0])
    return (self.slide_window[1] // 2, self.slide_window[0] // 2)


def sliding_window_logits(forward: Forward, images: tf.Tensor, window: tuple[int, int],
                          stride: tuple[int, int]) -> tf.Tensor:
  """mmseg `slide_inference`: the windows run as one batch (HRDA's `batched_slide`), each
  window's logits are resized to the window (bilinear, align_corners=False, as `encode_decode`)
  and averaged where windows overlap.

  Args:
    forward: The generator.
    images: Caffe-preprocessed float32 [B, H, W, 3].
    window: (height, width) of a window (the image's extent where it is smaller).
    stride: (height, width) step.

  Returns:
    float32 [B, H, W, C] logits.
  """
  size = tf.shape(images)[1:3]
  boxes = sliding_window.slide_boxes(size[0], size[1], window, stride)
  logits = forward(sliding_window.crop_windows(images, boxes))[keys.LOGITS]
  extent = tf.stack([boxes[0, 1] - boxes[0, 0], boxes[0, 3] - boxes[0, 2]])
  logits = tf.image.resize(tf.cast(logits, tf.float32), extent, method="bilinear")
  return sliding_window.merge_windows(logits, boxes[:, ::2], size)


def _logits(forward: Forward, images: tf.Tensor, options: InferenceOptions) -> tf.Tensor:
  if options.slide_window is None:
    return forward(images)[keys.LOGITS]
  return sliding_window_logits(forward, images, (options.slide_window[1],
                                                 options.slide_window[0]),
                               options.window_stride)


def _model_size(images: tf.Tensor, options: InferenceOptions, scale: float) -> tf.Tensor:
  if options.input_size is None:
    base = tf.cast(tf.shape(images)[1:3], tf.float32)
  else:
    base = tf.constant([options.input_size[1], options.input_size[0]], tf.float32)
  return tf.maximum(tf.cast(tf.round(base * scale), tf.int32), 1)


def predict_probabilities(forward: Forward, images: tf.Tensor, options: InferenceOptions,
                          output_size: tf.Tensor | None = None,
                          channels: Sequence[int] | None = None) -> tf.Tensor:
  """Class probabilities at `output_size`, averaged over the test-time augmentations.

  Args:
    forward: The generator (preprocessed images -> output dict with "logits").
    images: Caffe-preprocessed float32 [B, H, W, 3] at any size.
    options: Input size, scales, flip and resize method.
    output_size: int32 [2] (height, width) of the result; the images' own size when None.
    channels: Logit channels to keep (scoring a subset of the model's classes); all when None.

  Returns:
    float32 [B, height, width, C] probabilities.
  """
  if output_size is None:
    output_size = tf.shape(images)[1:3]
  resize = IMAGE_RESIZERS.get(options.resize)
  total = None
  for scale in options.scales:
    # Images already at the model's size (validation: resized by the pipeline) are not
    # resampled again.
    sized = options.input_size is None and scale == 1.0
    scaled = images if sized else resize(images, _model_size(images, options, scale))
    for flipped in (False, True) if options.flip else (False,):
      inputs = tf.reverse(scaled, axis=[2]) if flipped else scaled
      logits = _logits(forward, inputs, options)
      if flipped:
        logits = tf.reverse(logits, axis=[2])
      if channels is not None:
        logits = tf.gather(logits, list(channels), axis=-1)
      probabilities = tf.nn.softmax(upsample_bilinear(logits, output_size, options.align_corners))
      total = probabilities if total is None else total + probabilities
  passes = len(options.scales) * (2 if options.flip else 1)
  return total / passes if passes > 1 else total


def segment_images(forward: Forward, images: tf.Tensor, options: InferenceOptions,
                   channels: Sequence[int] | None = None) -> dict[str, tf.Tensor]:
  """Segments uint8 RGB images at their own size (the exported model's serving function).

  Args:
    forward: The generator (preprocessed images -> output dict with "logits").
    images: uint8 [B, H, W, 3] RGB.
    options: Input size, scales, flip and resize method.
    channels: Logit channels to keep; all when None.

  Returns:
    {"labels": int32 [B, H, W], "probabilities": float32 [B, H, W, C]}.
  """
  probabilities = predict_probabilities(forward, caffe_preprocess(images), options,
                                        channels=channels)
  return {"labels": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
          "probabilities": probabilities}


def output_channels(class_set: labels.ClassSet,
                    model_class_set: labels.ClassSet) -> list[int] | None:
  """Which of the model's logit channels give `class_set`'s classes, in order.

  Args:
    class_set: The classes wanted (scored, served).
    model_class_set: The classes the model predicts.

  Returns:
    None when the model predicts exactly `class_set`'s classes (also across storage spaces, as
    a SYNTHIA model on `cityscapes_as_camvid11` scored on CamVid "11"), else channel positions.

  Raises:
    ValueError: when the model lacks a class of `class_set`.
  """
  if class_set.names == model_class_set.names:
    return None
  return labels.subset_indices(class_set, model_class_set)
