"""The Caffe-style dilated ResNet of DeepLab-v2 (AdaptSegNet's `ResNetMulti` without its heads).

Layer names mirror the reference's module paths with "." replaced by "_" (`layer3_0_downsample_0`
is `layer3.0.downsample.0`), which is what the PyTorch weight import relies on.
"""

from typing import Sequence

import keras

from tfdaseg.models.batch_norm import batch_norm
from tfdaseg.models.padded_conv import padded_conv
from tfdaseg.models.pooling import CeilModeMaxPooling2D

RESNET101_BLOCKS = (3, 4, 23, 3)
# Bottleneck expansion: the third 1x1 conv has 4x the block's planes.
EXPANSION = 4
# (planes multiplier, stride, dilation) of layer1..layer4: output stride 8 (DeepLab-v2).
STAGES = ((1, 1, 1), (2, 2, 1), (4, 1, 2), (8, 1, 4))


def bottleneck(x, planes: int, strides: int, dilation: int, downsample: bool, bn_mode: str,
               name: str):
  """A Caffe-style bottleneck: the stride sits on the first 1x1 conv, as in the reference.

  Args:
    x: Input tensor.
    planes: Width of the 1x1 and 3x3 convs (the output has `EXPANSION * planes` channels).
    strides: Stride of the first 1x1 conv and of the shortcut.
    dilation: Dilation (and padding) of the 3x3 conv.
    downsample: Whether the shortcut is a 1x1 conv + BN.
    bn_mode: BatchNorm mode (`batch_norm.BN_MODES`).
    name: Prefix, e.g. "layer3_0".

  Returns:
    The block's output.
  """
  out = padded_conv(x, planes, 1, f"{name}_conv1", strides=strides)
  out = keras.layers.ReLU(name=f"{name}_relu1")(batch_norm(out, f"{name}_bn1", bn_mode))
  out = padded_conv(out, planes, 3, f"{name}_conv2", dilation=dilation, padding=dilation)
  out = keras.layers.ReLU(name=f"{name}_relu2")(batch_norm(out, f"{name}_bn2", bn_mode))
  out = padded_conv(out, planes * EXPANSION, 1, f"{name}_conv3")
  out = batch_norm(out, f"{name}_bn3", bn_mode)
  residual = x
  if downsample:
    residual = padded_conv(x, planes * EXPANSION, 1, f"{name}_downsample_0", strides=strides)
    residual = batch_norm(residual, f"{name}_downsample_1", bn_mode)
  out = keras.layers.Add(name=f"{name}_add")([out, residual])
  return keras.layers.ReLU(name=f"{name}_relu")(out)


def caffe_resnet(inputs, blocks: Sequence[int] = RESNET101_BLOCKS, base_width: int = 64,
                 bn_mode: str = "reference") -> dict:
  """Builds the dilated ResNet on `inputs` (output stride 8).

  Args:
    inputs: Preprocessed image tensor, NHWC.
    blocks: Bottlenecks per stage; (3, 4, 23, 3) is ResNet-101.
    base_width: Stem width and layer1 planes (64 in ResNet); smaller for tiny test models.
    bn_mode: BatchNorm mode (`batch_norm.BN_MODES`); "reference" is AdaptSegNet's and ADVENT's.

  Returns:
    {"layer3": stride-8 tensor with 16 * base_width channels,
     "layer4": stride-8 tensor with 32 * base_width channels}.
  """
  if len(blocks) != len(STAGES):
    raise ValueError(f"blocks must have {len(STAGES)} entries, got {tuple(blocks)}")
  x = padded_conv(inputs, base_width, 7, "conv1", strides=2, padding=3)
  x = keras.layers.ReLU(name="relu")(batch_norm(x, "bn1", bn_mode))
  x = CeilModeMaxPooling2D(pool_size=3, strides=2, padding=1, name="maxpool")(x)
  in_channels = base_width
  outputs = {}
  for stage, (count, (multiplier, strides, dilation)) in enumerate(zip(blocks, STAGES), start=1):
    planes = base_width * multiplier
    for index in range(count):
      first = index == 0
      # The reference's `_make_layer` adds a projection shortcut when the shape changes and,
      # always, on the first block of the dilated stages.
      downsample = first and (strides != 1 or in_channels != planes * EXPANSION or dilation > 1)
      x = bottleneck(x, planes, strides if first else 1, dilation, downsample, bn_mode,
                     name=f"layer{stage}_{index}")
      in_channels = planes * EXPANSION
    outputs[f"layer{stage}"] = x
  return {"layer3": outputs["layer3"], "layer4": outputs["layer4"]}
