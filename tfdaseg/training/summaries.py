"""TensorBoard output of a run: scalars and prediction grids, written by the chief only.

`tf.summary.scalar` / `tf.summary.image` live in the `tensorboard` package, which TensorFlow
2.21 no longer installs; the records are written here with `tf.summary.write` and the plugin
metadata TensorBoard's scalar and image dashboards read, so writing needs TensorFlow only.
"""

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tfdaseg.data.labels import IGNORE_ID
from tfdaseg.data.preprocessing import caffe_unpreprocess


def create_writer(logdir: str, chief: bool) -> tf.summary.SummaryWriter:
  """A file writer in `logdir` on the chief; a no-op writer on other workers."""
  return tf.summary.create_file_writer(logdir) if chief else tf.summary.create_noop_writer()


def _metadata(plugin: str, data_class: int, description: str = "") -> bytes:
  metadata = summary_pb2.SummaryMetadata(summary_description=description, data_class=data_class)
  metadata.plugin_data.plugin_name = plugin
  return metadata.SerializeToString()


def write_scalars(writer: tf.summary.SummaryWriter, step: int,
                  scalars: Mapping[str, float]) -> None:
  """Writes every scalar under its name at `step` (TensorBoard's "scalars" plugin format)."""
  metadata = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
  with writer.as_default(step=step):
    for name, value in scalars.items():
      tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


def write_image(writer: tf.summary.SummaryWriter, step: int, name: str, image: tf.Tensor,
                description: str = "") -> None:
  """Writes one uint8 [H, W, 3] image at `step` (TensorBoard's "images" plugin format:
  a string tensor [width, height, PNG])."""
  height, width = int(image.shape[0]), int(image.shape[1])
  tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), tf.io.encode_png(image)])
  with writer.as_default(step=step):
    tf.summary.write(name, tensor,
                     metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
                                        description))


def colourise(labels: tf.Tensor, palette: Sequence[Sequence[int]]) -> tf.Tensor:
  """Class ids [..., H, W] -> uint8 RGB [..., H, W, 3]; ignored and unknown ids are black.

  The TF twin of `tfdaseg.data.labels.colourise`.
  """
  table = np.zeros((IGNORE_ID + 1, 3), np.uint8)
  table[: len(palette)] = np.asarray(palette, np.uint8)
  return tf.gather(tf.constant(table), tf.clip_by_value(tf.cast(labels, tf.int32), 0, IGNORE_ID))


def prediction_grid(rows: Sequence[Mapping[str, tf.Tensor]], palette: Sequence[Sequence[int]],
                    panel_size: tuple[int, int]) -> tf.Tensor:
  """One image: a row per example with its image, colourised label and colourised prediction.

  Args:
    rows: Dicts with "image" (float32 [H, W, 3] Caffe-preprocessed), "label" and "prediction"
      (integer [H', W'] class ids, 255 ignored).
    palette: One RGB colour per class.
    panel_size: (height, width) every panel is resized to (labels with nearest neighbour).

  Returns:
    uint8 [rows * height, 3 * width, 3].
  """
  lines = []
  for row in rows:
    image = tf.image.resize(tf.cast(caffe_unpreprocess(row["image"]), tf.float32), panel_size)
    panels = [tf.cast(tf.round(image), tf.uint8)]
    for key in ("label", "prediction"):
      ids = tf.image.resize(tf.cast(row[key], tf.int32)[..., None], panel_size,
                            method="nearest")[..., 0]
      panels.append(colourise(ids, palette))
    lines.append(tf.concat(panels, axis=1))
  return tf.concat(lines, axis=0)
