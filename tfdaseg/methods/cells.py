"""Averages over a grid of cells and back, differentiable and XLA-compilable (no ResizeArea,
which has no gradient and no XLA kernel).

Pixel i of a length-n axis belongs to cell floor(i * cells / n): with n divisible by `cells`
these are the usual blocks; otherwise the cells differ by at most one pixel.
"""

import tensorflow as tf


def membership(length: tf.Tensor, cells: tf.Tensor | int) -> tf.Tensor:
  """float32 [length, cells]: 1 where pixel i belongs to cell j."""
  index = tf.range(length) * cells // length
  return tf.one_hot(index, cells)


def cell_sums(values: tf.Tensor, cells: tuple) -> tuple[tf.Tensor, tf.Tensor]:
  """Sums of `values` [B, H, W, C] over a (rows, columns) grid, and each cell's pixel count.

  Returns:
    (float32 [B, rows, columns, C], float32 [rows, columns]).
  """
  values = tf.cast(values, tf.float32)
  shape = tf.shape(values)
  rows, columns = membership(shape[1], cells[0]), membership(shape[2], cells[1])
  return (tf.einsum("bhwc,hr,wk->brkc", values, rows, columns),
          tf.einsum("hr,wk->rk", rows, columns))


def cell_means(values: tf.Tensor, cells: tuple) -> tf.Tensor:
  """Means of `values` [B, H, W, C] over a (rows, columns) grid: [B, rows, columns, C]."""
  sums, counts = cell_sums(values, cells)
  return sums / tf.maximum(counts, 1.0)[None, :, :, None]


def spread(values: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
  """Each cell's value [B, rows, columns, C] over its pixels of a grid of `size` (H, W)."""
  values = tf.cast(values, tf.float32)
  shape = tf.shape(values)
  rows, columns = membership(size[0], shape[1]), membership(size[1], shape[2])
  return tf.einsum("brkc,hr,wk->bhwc", values, rows, columns)
