"""Sliding windows over images and the average of per-window maps, as mmseg's slide inference.

mmseg `EncoderDecoder.slide_inference` (DAFormer, HRDA: mmseg/models/segmentors/
encoder_decoder.py) and HRDA's detail branch (`HRDAEncoderDecoder.extract_slide_feat`,
`HRDAHead.decode_hr`) place windows of the crop size every `stride` pixels, the last one of each
axis moved back to end at the border:
  grids = max(size - crop + stride - 1, 0) // stride + 1
  start = min(i * stride + crop, size) - crop   (clamped at 0)
and average the windows' maps where they overlap (sum, then divide by the count of windows).

Everything is TF ops on dynamic shapes, so the same code runs eagerly, in `tf.function`, under
XLA and in an exported SavedModel whose input size is only known at run time.
"""

import tensorflow as tf


def window_size(size: tf.Tensor, crop: int) -> tf.Tensor:
  """The window extent along one axis: the crop, or the whole axis when it is shorter."""
  return tf.minimum(tf.cast(size, tf.int32), crop)


def _starts(size: tf.Tensor, crop: int, stride: int) -> tf.Tensor:
  size = tf.cast(size, tf.int32)
  grids = tf.maximum(size - crop + stride - 1, 0) // stride + 1
  ends = tf.minimum(tf.range(grids) * stride + crop, size)
  return tf.maximum(ends - crop, 0)


def slide_boxes(height: tf.Tensor, width: tf.Tensor, crop: tuple[int, int],
                stride: tuple[int, int]) -> tf.Tensor:
  """The windows covering a `height` x `width` image, rows first.

  Args:
    height: int scalar.
    width: int scalar.
    crop: (height, width) of a window.
    stride: (height, width) step between windows.

  Returns:
    int32 [n, 4]: (y1, y2, x1, x2) of each window, in the order mmseg visits them.
  """
  rows = _starts(height, crop[0], stride[0])
  cols = _starts(width, crop[1], stride[1])
  y1, x1 = tf.meshgrid(rows, cols, indexing="ij")
  y1, x1 = tf.reshape(y1, [-1]), tf.reshape(x1, [-1])
  return tf.stack([y1, y1 + window_size(height, crop[0]),
                   x1, x1 + window_size(width, crop[1])], axis=1)


def crop_windows(images: tf.Tensor, boxes: tf.Tensor) -> tf.Tensor:
  """Cuts the windows out of every image, windows major (as HRDA's `torch.cat(crop_imgs)`).

  Args:
    images: [B, H, W, C].
    boxes: int32 [n, 4] windows of one size (`slide_boxes`).

  Returns:
    [n * B, h, w, C]: window 0 of every image, then window 1, ...
  """
  size = tf.stack([boxes[0, 1] - boxes[0, 0], boxes[0, 3] - boxes[0, 2]])
  windows = tf.map_fn(
      lambda box: tf.slice(images, tf.stack([0, box[0], box[2], 0]),
                           tf.concat([[-1], size, [-1]], axis=0)),
      boxes, fn_output_signature=tf.TensorSpec([None, None, None, images.shape[-1]],
                                               images.dtype))
  shape = tf.shape(windows)
  return tf.reshape(windows, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))


def merge_windows(values: tf.Tensor, starts: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """Averages per-window maps placed at `starts` on a map of `size` (0 where none lies).

  Args:
    values: [n * B, h, w, C] maps of the windows, windows major (`crop_windows`' order).
    starts: int32 [n, 2] (row, column) of each window's top-left corner on the output map;
      moved back where a window would cross the far border.
    size: int32 [2] (height, width) of the output map.

  Returns:
    float32 [B, height, width, C]: the sum of the windows over the count of windows at each
    position, 0 where no window lies.
  """
  values = tf.cast(values, tf.float32)
  n = tf.shape(starts)[0]
  shape = tf.shape(values)
  batch, h, w, channels = shape[0] // n, shape[1], shape[2], shape[3]
  starts = tf.minimum(starts, tf.stack([size[0] - h, size[1] - w])[tf.newaxis])
  rows = starts[:, 0, tf.newaxis, tf.newaxis] + tf.range(h)[tf.newaxis, :, tf.newaxis]
  cols = starts[:, 1, tf.newaxis, tf.newaxis] + tf.range(w)[tf.newaxis, tf.newaxis, :]
  ids = tf.reshape(rows * size[1] + cols, [-1])
  cells = size[0] * size[1]
  # [n, B, h, w, C] -> [n, h, w, B, C]: one segment row per window pixel.
  per_pixel = tf.reshape(tf.transpose(tf.reshape(values, [n, batch, h, w, channels]),
                                      [0, 2, 3, 1, 4]), [-1, batch, channels])
  total = tf.math.unsorted_segment_sum(per_pixel, ids, cells)
  count = tf.math.unsorted_segment_sum(tf.ones_like(ids, tf.float32), ids, cells)
  average = total / tf.maximum(count, 1.0)[:, tf.newaxis, tf.newaxis]
  return tf.transpose(tf.reshape(average, [size[0], size[1], batch, channels]), [2, 0, 1, 3])


def coverage(boxes: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """Where any window lies on a map of `size`.

  Args:
    boxes: int32 [n, 4] (y1, y2, x1, x2) windows in the map's coordinates.
    size: int32 [2] (height, width) of the map.

  Returns:
    float32 [height, width]: 1 inside a window, 0 elsewhere.
  """
  rows = tf.range(size[0])[tf.newaxis, :]
  cols = tf.range(size[1])[tf.newaxis, :]
  in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])
  in_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])
  covered = in_rows[:, :, tf.newaxis] & in_cols[:, tf.newaxis, :]
  return tf.cast(tf.reduce_any(covered, axis=0), tf.float32)
