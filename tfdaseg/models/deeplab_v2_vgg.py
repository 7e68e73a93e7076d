"""DeepLab-v2 VGG-16 generator of AdaptSegNet (`DeeplabVGG`, DeepLab-LargeFOV style).

torchvision VGG-16 `features` without pool4 and pool5, conv5_1..3 dilated 2, then fc6 and fc7 as
3x3 convs dilated 4 (512 -> 1024 -> 1024), then the DeepLab-v2 classifier: output stride 8.
Conv layers are named like keras.applications VGG16 (`block1_conv1` ...) so ImageNet weights map
by name; `fc6`, `fc7` and `main_head` are new.
"""

import keras

from tfdaseg.models import outputs as keys
from tfdaseg.models.aspp_classifier import DEEPLAB_V2_RATES, AsppClassifier
from tfdaseg.models.batch_norm import check_bn_mode
from tfdaseg.models.padded_conv import padded_conv
from tfdaseg.models.registry import MODELS

# (convs, width multiplier, dilation, pooled) per VGG-16 block; the reference removes pool4 and
# pool5 and dilates conv5 by 2. torchvision's remaining pools are 2x2/2, floor mode.
VGG16_BLOCKS = ((2, 1, 1, True), (2, 2, 1, True), (3, 4, 1, True), (3, 8, 1, False),
                (3, 8, 2, False))
# fc6 / fc7: 1024 channels (16 x base width), 3x3, dilation 4, padding 4.
FC_MULTIPLIER = 16
FC_DILATION = 4


@MODELS.register("deeplab_v2_vgg16")
def deeplab_v2_vgg16(num_classes: int = 19, base_width: int = 64, aspp_compat: str = "adaptsegnet",
                     bn_mode: str = "reference",
                     input_shape: tuple = (None, None, 3)) -> keras.Model:
  """AdaptSegNet's VGG-16 generator.

  Args:
    num_classes: Classes predicted.
    base_width: Width of block1 (64 in VGG-16); smaller for tiny test models.
    aspp_compat: "adaptsegnet" (head sums rates 6 and 12, like the reference) or "full".
    bn_mode: Checked, then ignored: VGG-16 has no BatchNorm. Accepted so that every generator
      takes the same options.
    input_shape: NHWC input shape without the batch axis; any height and width by default.

  Returns:
    A functional `keras.Model` taking float32 Caffe-preprocessed images and returning
    {"logits": stride-8 logits, "features": fc7 output (16 * base_width channels)}.

  Example:
    >>> model = deeplab_v2_vgg16(num_classes=3, base_width=4)
    >>> tuple(model(keras.ops.zeros((1, 64, 48, 3)))["logits"].shape)
    (1, 8, 6, 3)
  """
  check_bn_mode(bn_mode)
  inputs = keras.Input(shape=input_shape, name="image")
  x = inputs
  for block, (convs, multiplier, dilation, pooled) in enumerate(VGG16_BLOCKS, start=1):
    for index in range(1, convs + 1):
      name = f"block{block}_conv{index}"
      x = padded_conv(x, base_width * multiplier, 3, name, dilation=dilation,
                      padding=dilation, use_bias=True)
      x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if pooled:
      x = keras.layers.MaxPooling2D(2, 2, padding="valid", name=f"block{block}_pool")(x)
  for name in ("fc6", "fc7"):
    x = padded_conv(x, base_width * FC_MULTIPLIER, 3, name, dilation=FC_DILATION,
                    padding=FC_DILATION, use_bias=True)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
  logits = AsppClassifier(num_classes, DEEPLAB_V2_RATES, aspp_compat, name="main_head")(x)
  return keras.Model(inputs, {keys.LOGITS: logits, keys.FEATURES: x}, name="deeplab_v2_vgg16")
