"""DeepLab-v2 ResNet-101 generators of AdaptSegNet: multi-level (two heads) and single-level.

Outputs (dict): "logits" (main head on layer4, stride 8; the reference's pred2), "aux_logits"
(head on layer3; the reference's pred1; multi-level only), "features" (layer4, the main head's
input) and "aux_features" (layer3).
"""

from typing import Sequence

import keras

from tfdaseg.models import outputs as keys
from tfdaseg.models.aspp_classifier import DEEPLAB_V2_RATES, AsppClassifier
from tfdaseg.models.registry import MODELS
from tfdaseg.models.resnet_backbone import RESNET101_BLOCKS, caffe_resnet


def _deeplab_v2_resnet(name: str, multi_level: bool, num_classes: int,
                       blocks: Sequence[int], base_width: int, bn_mode: str,
                       aspp_compat: str, input_shape: tuple) -> keras.Model:
  inputs = keras.Input(shape=input_shape, name="image")
  stages = caffe_resnet(inputs, blocks=blocks, base_width=base_width, bn_mode=bn_mode)
  outputs = {
      keys.LOGITS: AsppClassifier(num_classes, DEEPLAB_V2_RATES, aspp_compat,
                               name="main_head")(stages["layer4"]),
      keys.FEATURES: stages["layer4"],
      keys.AUX_FEATURES: stages["layer3"],
  }
  if multi_level:
    outputs[keys.AUX_LOGITS] = AsppClassifier(num_classes, DEEPLAB_V2_RATES, aspp_compat,
                                           name="aux_head")(stages["layer3"])
  return keras.Model(inputs, outputs, name=name)


@MODELS.register("deeplab_v2_resnet101_multi")
def deeplab_v2_resnet101_multi(num_classes: int = 19, blocks: Sequence[int] = RESNET101_BLOCKS,
                               base_width: int = 64, bn_mode: str = "reference",
                               aspp_compat: str = "adaptsegnet",
                               input_shape: tuple = (None, None, 3)) -> keras.Model:
  """AdaptSegNet's multi-level generator (`DeeplabMulti`): heads on layer3 and layer4.

  Args:
    num_classes: Classes predicted by both heads.
    blocks: Bottlenecks per stage; (1, 1, 1, 1) for tiny test models.
    base_width: ResNet base width (64); smaller for tiny test models.
    bn_mode: BatchNorm in training: "reference" (batch statistics, running statistics updated as
      PyTorch does, gamma and beta fixed: AdaptSegNet's and ADVENT's training), "frozen"
      (inference mode, nothing changes) or "train" (all trained: training from scratch). See
      `tfdaseg.models.batch_norm`.
    aspp_compat: "adaptsegnet" (heads sum rates 6 and 12, like the reference code and its
      released checkpoints) or "full" (sum rates 6/12/18/24, like ADVENT).
    input_shape: NHWC input shape without the batch axis; any height and width by default.

  Returns:
    A functional `keras.Model` taking float32 Caffe-preprocessed images (BGR minus mean) and
    returning {"logits", "aux_logits", "features", "aux_features"}.

  Example:
    >>> model = deeplab_v2_resnet101_multi(num_classes=3, blocks=(1, 1, 1, 1), base_width=4)
    >>> out = model(keras.ops.zeros((1, 65, 65, 3)))
    >>> tuple(out["logits"].shape), tuple(out["aux_logits"].shape)
    ((1, 9, 9, 3), (1, 9, 9, 3))
  """
  return _deeplab_v2_resnet("deeplab_v2_resnet101_multi", True, num_classes, blocks, base_width,
                            bn_mode, aspp_compat, input_shape)


@MODELS.register("deeplab_v2_resnet101_single")
def deeplab_v2_resnet101_single(num_classes: int = 19, blocks: Sequence[int] = RESNET101_BLOCKS,
                                base_width: int = 64, bn_mode: str = "reference",
                                aspp_compat: str = "adaptsegnet",
                                input_shape: tuple = (None, None, 3)) -> keras.Model:
  """AdaptSegNet's single-level generator (`Res_Deeplab`): one head on layer4.

  Args and Returns: as `deeplab_v2_resnet101_multi`, without "aux_logits".
  """
  return _deeplab_v2_resnet("deeplab_v2_resnet101_single", False, num_classes, blocks,
                            base_width, bn_mode, aspp_compat, input_shape)
