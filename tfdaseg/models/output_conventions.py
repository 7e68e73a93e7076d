"""How each generator family's reference code resizes logits and averages its cross-entropy.

`upsample_bilinear` is the one logit resize that training, validation, evaluation and export
share.

The DeepLab-v2 code bases (AdaptSegNet, ADVENT, DACS) upsample logits with
`nn.Upsample(align_corners=True)` and average the source CE over labelled pixels
(CrossEntropy2d, size_average); DACS averages its pixel-weighted mixed CE over all pixels
(CrossEntropyLoss2dPixelWiseWeighted), which the methods ask for themselves. The mmseg code bases
(DAFormer, HRDA, MIC) resize with `align_corners=False` (decode_head.py `losses`,
encoder_decoder.py `encode_decode`, the heads' default) and average every CE over all pixels,
ignored ones counting as 0 (mmseg 0.16 losses/utils.py `weight_reduce_loss`: `loss.mean()`).
"""

import dataclasses

import keras
import tensorflow as tf

from tfdaseg.models.daformer import MIT_GENERATORS


@dataclasses.dataclass(frozen=True)
class OutputConventions:
  """A generator family's reference conventions.

  Args:
    align_corners: Bilinear resizing of logits with aligned corners (else half-pixel centres).
    average_over_all_pixels: Every CE divided by all pixels rather than the labelled ones.
  """

  align_corners: bool
  average_over_all_pixels: bool


DEEPLAB = OutputConventions(align_corners=True, average_over_all_pixels=False)
MMSEG = OutputConventions(align_corners=False, average_over_all_pixels=True)

# Generator (registry and `keras.Model` name; HRDA keeps its MiT's) -> conventions.
GENERATOR_CONVENTIONS = {
    "deeplab_v2_resnet101_multi": DEEPLAB,
    "deeplab_v2_resnet101_single": DEEPLAB,
    "deeplab_v2_vgg16": DEEPLAB,
    **{name: MMSEG for name in MIT_GENERATORS},
}


def output_conventions(generator: keras.Model) -> OutputConventions:
  """The conventions of a generator's family; DeepLab's for a generator not in the table.

  Args:
    generator: A generator, built or loaded from a `.keras` file.

  Returns:
    Its `OutputConventions`.
  """
  return GENERATOR_CONVENTIONS.get(generator.name, DEEPLAB)


def upsample_bilinear(images: tf.Tensor, size: tf.Tensor, align_corners: bool = True) -> tf.Tensor:
  """Bilinear resize as PyTorch's, with aligned corners by default (DeepLab-v2 references).

  With aligned corners output pixel i samples input position i * (in - 1) / (out - 1) (corner
  pixels map to corner pixels; `tf.image.resize` has no such mode, the raw op has); without,
  (i + 0.5) * in / out - 0.5, F.interpolate(align_corners=False) as mmseg's `resize`.

  Args:
    images: [B, H, W, C] tensor (cast to float32).
    size: (height, width) of the output.
    align_corners: The resize mode (`OutputConventions.align_corners`).

  Returns:
    float32 [B, height, width, C].
  """
  return tf.raw_ops.ResizeBilinear(images=tf.cast(images, tf.float32), size=size,
                                   align_corners=align_corners,
                                   half_pixel_centers=not align_corners)
