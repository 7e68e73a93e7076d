"""The SavedModel a deployment loads with plain `tf.saved_model.load`, no tfdaseg needed.

Endpoints (all traced graphs; loading never imports Python code of ours):
  serving_default(images: uint8 [B, H, W, 3] RGB) -> {"labels": int32 [B, H, W],
    "probabilities": float32 [B, H, W, C]}: preprocessing, resizing to the model's input size,
    upsampling and test-time augmentation inside the graph (tfdaseg.evaluation.inference).
  generator(images: float32 [B, H, W, 3] caffe-preprocessed) -> the generator's output dict,
    logits restricted to the exported classes (for evaluation with other options, retrieval).
  class_names() -> string [C]; palette() -> uint8 [C, 3]; class_set() -> string;
  input_size() -> int32 [2] (width, height), (0, 0) when images run at their own size.
"""

from typing import Sequence

import keras
import tensorflow as tf

from tfdaseg.data import labels
from tfdaseg.models import outputs as keys
from tfdaseg.evaluation.inference import InferenceOptions, keras_forward, segment_images

def _restricted_forward(generator: keras.Model, channels: Sequence[int] | None):
  """The generator in inference mode with its logits cut down to `channels`."""

  run = keras_forward(generator)

  def forward(images: tf.Tensor) -> dict[str, tf.Tensor]:
    outputs = dict(run(images))
    if channels is not None:
      for key in keys.LOGIT_KEYS:
        if key in outputs:
          outputs[key] = tf.gather(outputs[key], list(channels), axis=-1)
    return outputs

  return forward


def build_serving_archive(generator: keras.Model, class_set: labels.ClassSet,
                          options: InferenceOptions,
                          channels: Sequence[int] | None = None) -> keras.export.ExportArchive:
  """Assembles the endpoints of the module docstring around `generator`.

  Args:
    generator: The Keras generator (output dict with "logits").
    class_set: The classes served (after `channels`).
    options: Input size, scales, flip and resize method baked into `serving_default`.
    channels: The generator's logit channels giving `class_set`, or None for all of them.

  Returns:
    A `keras.export.ExportArchive`; `write_out(path)` saves it.
  """
  forward = _restricted_forward(generator, channels)
  # Endpoints track the variables they use; `track(generator)` would store every weight twice
  # (once as the Keras variable, once as the tf.Variable the graphs capture).
  archive = keras.export.ExportArchive()
  archive.add_endpoint(
      "serving_default", lambda images: segment_images(forward, images, options),
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
  archive.add_endpoint(
      "generator", forward,
      input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")])
  names = list(class_set.names)
  palette = [list(colour) for colour in class_set.palette]
  size = list(options.input_size) if options.input_size else [0, 0]
  archive.add_endpoint("class_names", lambda: tf.constant(names, tf.string), input_signature=[])
  archive.add_endpoint("palette", lambda: tf.constant(palette, tf.uint8), input_signature=[])
  archive.add_endpoint("class_set", lambda: tf.constant(class_set.name), input_signature=[])
  archive.add_endpoint("input_size", lambda: tf.constant(size, tf.int32), input_signature=[])
  return archive
