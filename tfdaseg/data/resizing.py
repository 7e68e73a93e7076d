"""Resampling images and labels to the model's input size, as the reference loaders do.

The reference resizes images with PIL's BICUBIC and labels with NEAREST (AdaptSegNet
dataset/gta5_dataset.py:53-54 and dataset/cityscapes_dataset.py:45; ADVENT
advent/dataset/base_dataset.py `get_image` / `get_labels`). PIL's BICUBIC is Keys' cubic
(a = -0.5) with its support widened by the downscale factor (antialiasing), run as two 1-D
passes that each round and clip to uint8. `tf.image.resize(method="bicubic", antialias=True)`
is the same kernel in one pass; rounded and clipped like PIL's uint8 output it is within one
level of PIL on all but a few pixels (1914x1052 -> 1280x720: mean abs error 0.18, max 4 where
PIL clips an overshoot after its first pass; 2048x1024 -> 1024x512: 0.15, max 1;
tests/data/test_resizing.py). Plain bilinear (without antialiasing) reads 2x2 pixels whatever
the downscale, so 1914 -> 1280 aliases and 2048 -> 1024 is a 2x2 box filter: mean abs error
about 4 levels, max about 50, on noisy content.
"""

from typing import Callable

import tensorflow as tf

# (image [..., H, W, C] in pixel units 0..255, size (height, width)) -> float32 resized image.
Resize = Callable[[tf.Tensor, tf.Tensor | tuple[int, int]], tf.Tensor]


def resize_bicubic_like_pil(image: tf.Tensor, size: tf.Tensor | tuple[int, int]) -> tf.Tensor:
  """PIL's `Image.resize(size, Image.BICUBIC)`, in float32 pixel units.

  Args:
    image: [..., H, W, C] pixel values in 0..255 (uint8 or float).
    size: (height, width) to reach.

  Returns:
    float32 [..., height, width, C], rounded and clipped to 0..255 as PIL's uint8 output is
    (the cubic kernel overshoots at edges).
  """
  resized = tf.image.resize(image, size, method="bicubic", antialias=True)
  return tf.clip_by_value(tf.round(resized), 0.0, 255.0)


def resize_bilinear(image: tf.Tensor, size: tf.Tensor | tuple[int, int]) -> tf.Tensor:
  """Bilinear without antialiasing: cheaper, aliases when shrinking by more than 2x.

  Args:
    image: [..., H, W, C] pixel values.
    size: (height, width) to reach.

  Returns:
    float32 [..., height, width, C] (within the input's range, so neither rounded nor clipped).
  """
  return tf.image.resize(image, size, method="bilinear")


def resize_label(label: tf.Tensor, size: tf.Tensor | tuple[int, int]) -> tf.Tensor:
  """Nearest neighbour, like the reference's PIL NEAREST: ids are never blended.

  Args:
    label: [..., H, W, 1] ids.
    size: (height, width) to reach.

  Returns:
    The label at `size`, in its own dtype.
  """
  return tf.image.resize(label, size, method="nearest")


# Image filters by name (`interpolation=` of the input pipeline, `--resize` of evaluation).
INTERPOLATIONS: dict[str, Resize] = {
    "bicubic": resize_bicubic_like_pil,
    "bilinear": resize_bilinear,
}
# The reference loaders' filter.
DEFAULT_INTERPOLATION = "bicubic"
