"""The TFRecord schema: `tf.train.Example` keys as in TF Model Garden's segmentation data.

Labels are single-channel PNGs of storage-space ids (labels.py), 255 = ignore. Unlabelled
images carry no label keys; weakly labelled ones carry `image/class/label`.
"""

from typing import Sequence

import tensorflow as tf

IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
LABEL_ENCODED = "image/segmentation/class/encoded"
LABEL_FORMAT = "image/segmentation/class/format"
IMAGE_CLASS_LABEL = "image/class/label"


def _bytes(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def make_example(
    image_bytes: bytes,
    image_format: str,
    height: int,
    width: int,
    filename: str,
    label_png: bytes | None = None,
    class_labels: Sequence[int] | None = None,
) -> tf.train.Example:
  """Builds one record.

  Args:
    image_bytes: The encoded image, as stored on disk unless resizing was asked for.
    image_format: "png" or "jpeg".
    height: Image height in pixels.
    width: Image width in pixels.
    filename: The image path relative to the dataset root.
    label_png: Single-channel PNG of storage ids, or None for an unlabelled image.
    class_labels: Image-level class ids for weakly labelled images, or None.

  Returns:
    The `tf.train.Example`.
  """
  feature = {
      IMAGE_ENCODED: _bytes(image_bytes),
      IMAGE_FORMAT: _bytes(image_format.encode()),
      IMAGE_HEIGHT: _ints([height]),
      IMAGE_WIDTH: _ints([width]),
      IMAGE_FILENAME: _bytes(filename.encode()),
  }
  if label_png is not None:
    feature[LABEL_ENCODED] = _bytes(label_png)
    feature[LABEL_FORMAT] = _bytes(b"png")
  if class_labels is not None:
    feature[IMAGE_CLASS_LABEL] = _ints(class_labels)
  return tf.train.Example(features=tf.train.Features(feature=feature))


_FEATURES = {
    IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
    IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
    IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
    IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string, default_value=""),
    LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string, default_value=""),
    IMAGE_CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
}


def decode_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses and decodes one serialized record (graph-compatible).

  Args:
    serialized: A scalar string tensor.

  Returns:
    A dict with "image" (uint8 [H, W, 3], RGB), "label" (uint8 [H, W, 1] of storage ids, all 255
    when the record is unlabelled), "has_label" (bool scalar), "filename" (string scalar) and
    "class_labels" (int64 [N]).
  """
  parsed = tf.io.parse_single_example(serialized, _FEATURES)
  image = tf.io.decode_image(parsed[IMAGE_ENCODED], channels=3, expand_animations=False)
  height = tf.cast(parsed[IMAGE_HEIGHT], tf.int32)
  width = tf.cast(parsed[IMAGE_WIDTH], tf.int32)
  image = tf.ensure_shape(image, [None, None, 3])
  has_label = tf.strings.length(parsed[LABEL_ENCODED]) > 0
  label = tf.cond(
      has_label,
      lambda: tf.io.decode_png(parsed[LABEL_ENCODED], channels=1),
      lambda: tf.fill(tf.stack([height, width, 1]), tf.constant(255, tf.uint8)),
  )
  return {
      "image": image,
      "label": tf.ensure_shape(label, [None, None, 1]),
      "has_label": has_label,
      "filename": parsed[IMAGE_FILENAME],
      "class_labels": tf.sparse.to_dense(parsed[IMAGE_CLASS_LABEL]),
  }
