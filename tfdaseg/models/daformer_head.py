"""Decoders on the four MiT stages: DAFormer's head and SegFormer's all-MLP head.

DAFormer (mmseg/models/decode_heads/daformer_head.py with
configs/_base_/models/daformer_sepaspp_mitb5.py): each stage is embedded to `embed_dim` (256) by
a Linear layer (`MLP`, no norm, no activation), stages 2-4 are resized bilinearly
(align_corners=False) to stage 1's size (stride 4), the four are concatenated (stage order), and
the context-aware fusion (`ASPPWrapper`, sep=True, pool=False) runs depthwise-separable ASPP
branches at dilations 1, 6, 12, 18 (dilation 1: a 1x1 conv; the others: a dilated 3x3 depthwise
conv and a 1x1 pointwise conv, each followed by BatchNorm and ReLU, as mmcv's
`DepthwiseSeparableConvModule`) on the concatenation, concatenates them and reduces them with a
3x3 conv + BatchNorm + ReLU (`bottleneck`) to `channels` (256). Then `Dropout2d(0.1)` and a 1x1
conv with bias to the classes (`conv_seg`, from mmseg's BaseDecodeHead).

SegFormer (mmseg/models/decode_heads/segformer_head.py, configs/_base_/models/segformer_b5.py):
the same embedding (`linear_c`, 768 for B2-B5 in the reference config), resize and
concatenation, then a 1x1 conv + BatchNorm + ReLU (`linear_fuse`), Dropout2d(0.1) and a 1x1 conv
with bias (`linear_pred`).

Every conv followed by BatchNorm has no bias (mmcv ConvModule bias="auto"). Layer names start
with "decode_head_", the reference's module prefix, which both the PyTorch import and the head
learning-rate split (`tfdaseg.models.head_variables`) read.
"""

from typing import Sequence

import keras
import tensorflow as tf

from tfdaseg.models.batch_norm import batch_norm
from tfdaseg.models.dropout import ChannelDropout

HEAD_PREFIX = "decode_head"
# daformer_sepaspp_mitb5.py / daformer_conv1_mitb5.py: embed_dims 256, channels 256, ASPP
# dilations (1, 6, 12, 18), dropout_ratio 0.1.
DAFORMER_EMBED_DIM = 256
DAFORMER_CHANNELS = 256
DAFORMER_DILATIONS = (1, 6, 12, 18)
DROPOUT = 0.1
# segformer_b5.py: decoder_params embed_dim 768.
SEGFORMER_EMBED_DIM = 768

# mmcv ConvModule.init_weights: kaiming_init(mode="fan_out", nonlinearity="relu"), normal.
_CONV_INIT = keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal")
# torch.nn.Linear's default init, kaiming_uniform_(a=sqrt(5)): U(+-1/sqrt(fan_in)).
_LINEAR_INIT = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
# BaseDecodeHead init_cfg: Normal(std=0.01) on the classifier, bias 0.
_CLASSIFIER_INIT = keras.initializers.RandomNormal(stddev=0.01)


@keras.saving.register_keras_serializable(package="tfdaseg")
class ResizeLike(keras.layers.Layer):
  """Bilinear resize of `inputs[0]` to the height and width of `inputs[1]`, known at run time
  (mmseg `resize(mode="bilinear", align_corners=False)`: TF's half-pixel centres)."""

  def call(self, inputs):
    x, like = inputs
    resized = tf.image.resize(x, tf.shape(like)[1:3], method="bilinear")
    return tf.cast(resized, x.dtype)

  def compute_output_shape(self, input_shape):
    x, like = input_shape
    return (x[0], like[1], like[2], x[3])


def _embed_and_concatenate(stages: Sequence, embed_dim: int, name: str):
  """The per-stage Linear embedding, stages 2-4 resized to stage 1, concatenated."""
  embedded = []
  for index, stage in enumerate(stages):
    x = keras.layers.Dense(embed_dim, kernel_initializer=_LINEAR_INIT,
                           bias_initializer=_LINEAR_INIT, name=f"{name}_{index}")(stage)
    if index:
      x = ResizeLike(name=f"{name}_{index}_resize")([x, stages[0]])
    embedded.append(x)
  return keras.layers.Concatenate(name=f"{name}_concat")(embedded)


def _conv_bn_relu(x, filters: int, kernel_size: int, bn_mode: str, name: str):
  """mmcv ConvModule: conv without bias ("same" padding = kernel // 2 at stride 1), BN, ReLU."""
  x = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=name)(x)
  return keras.layers.ReLU(name=f"{name}_relu")(batch_norm(x, f"{name}_bn", bn_mode))


def _separable_branch(x, filters: int, dilation: int, bn_mode: str, name: str):
  """mmcv DepthwiseSeparableConvModule: depthwise 3x3 (dilated, padding = dilation) + BN + ReLU,
  then pointwise 1x1 + BN + ReLU."""
  x = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=dilation, use_bias=False,
                                   depthwise_initializer=_CONV_INIT, name=f"{name}_depthwise")(x)
  x = keras.layers.ReLU(name=f"{name}_depthwise_relu")(
      batch_norm(x, f"{name}_depthwise_bn", bn_mode))
  return _conv_bn_relu(x, filters, 1, bn_mode, f"{name}_pointwise")


def _classify(x, num_classes: int, dropout: float, name: str):
  x = ChannelDropout(dropout, name=f"{name}_dropout")(x)
  return keras.layers.Conv2D(num_classes, 1, kernel_initializer=_CLASSIFIER_INIT,
                             name=name)(x)


def daformer_head(stages: Sequence, num_classes: int, bn_mode: str,
                  embed_dim: int = DAFORMER_EMBED_DIM, channels: int = DAFORMER_CHANNELS,
                  dilations: Sequence[int] = DAFORMER_DILATIONS, dropout: float = DROPOUT):
  """DAFormer's head with context-aware fusion (see the module docstring).

  Args:
    stages: The four encoder outputs, stride 4 first.
    num_classes: Output channels.
    bn_mode: BatchNorm mode (`tfdaseg.models.batch_norm`); DAFormer trains it ("train").
    embed_dim: Channels of each stage's embedding.
    channels: Channels of the ASPP branches and the bottleneck.
    dilations: ASPP dilations; 1 is a 1x1 conv.
    dropout: Channel dropout before the classifier.

  Returns:
    Logits at stride 4.
  """
  x = _embed_and_concatenate(stages, embed_dim, f"{HEAD_PREFIX}_embed")
  branches = [_conv_bn_relu(x, channels, 1, bn_mode, f"{HEAD_PREFIX}_aspp_{index}")
              if dilation == 1 else
              _separable_branch(x, channels, dilation, bn_mode, f"{HEAD_PREFIX}_aspp_{index}")
              for index, dilation in enumerate(dilations)]
  x = keras.layers.Concatenate(name=f"{HEAD_PREFIX}_aspp_concat")(branches)
  x = _conv_bn_relu(x, channels, 3, bn_mode, f"{HEAD_PREFIX}_bottleneck")
  return _classify(x, num_classes, dropout, f"{HEAD_PREFIX}_classifier")


def segformer_head(stages: Sequence, num_classes: int, bn_mode: str,
                   embed_dim: int = SEGFORMER_EMBED_DIM, dropout: float = DROPOUT,
                   prefix: str = HEAD_PREFIX):
  """SegFormer's all-MLP head (see the module docstring).

  Args:
    stages: The four encoder outputs, stride 4 first.
    num_classes: Output channels.
    bn_mode: BatchNorm mode of `linear_fuse`.
    embed_dim: Channels of each stage's embedding and of the fusion.
    dropout: Channel dropout before the classifier.
    prefix: Layer-name prefix; HRDA's scale attention, a second head of this structure, has
      its own (it must start with "decode_head" to train at the head's learning rate).

  Returns:
    Logits at stride 4.
  """
  x = _embed_and_concatenate(stages, embed_dim, f"{prefix}_embed")
  x = _conv_bn_relu(x, embed_dim, 1, bn_mode, f"{prefix}_fuse")
  return _classify(x, num_classes, dropout, f"{prefix}_classifier")
