"""The generators' variables as the optimiser groups them: the classifier heads with their
learning-rate multiplier, and the variables the weight decay spares."""

import keras

from tfdaseg.models.aspp_classifier import AsppClassifier
from tfdaseg.models.daformer import MIT_GENERATORS
from tfdaseg.models.daformer_head import HEAD_PREFIX

# Generator (registry and `keras.Model` name, kept by `.keras` files) -> learning-rate multiplier
# of its heads, as each reference model's `optim_parameters` sets it: the DeepLab-v2 ResNets train
# their heads at 10x (AdaptSegNet model/deeplab_multi.py:222-224, ADVENT
# advent/model/deeplabv2.py:169-171); DeeplabVGG returns one group (AdaptSegNet
# model/deeplab_vgg.py:53-54); DAFormer's config trains the decode head at 10x (configs/daformer/
# gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py: custom_keys head lr_mult 10).
HEAD_LEARNING_RATE_MULTIPLIERS = {
    "deeplab_v2_resnet101_multi": 10.0,
    "deeplab_v2_resnet101_single": 10.0,
    "deeplab_v2_vgg16": 1.0,
    **{name: 10.0 for name in MIT_GENERATORS},
}


def head_learning_rate_multiplier(generator: keras.Model) -> float:
  """Returns how many times the base learning rate the generator's heads are trained at.

  Args:
    generator: A tfdaseg generator, built or loaded from a `.keras` file.

  Returns:
    The multiplier (10.0 for the DeepLab-v2 ResNets, 1.0 for VGG-16).

  Raises:
    ValueError: for a model that is not a registered generator.
  """
  try:
    return HEAD_LEARNING_RATE_MULTIPLIERS[generator.name]
  except KeyError:
    raise ValueError(f"model {generator.name!r} has no head learning-rate multiplier; known "
                     f"generators: {', '.join(sorted(HEAD_LEARNING_RATE_MULTIPLIERS))}") from None


def _is_head(layer: keras.layers.Layer) -> bool:
  # mmcv's custom_keys match "head" in the parameter name: every `decode_head.*` module.
  return isinstance(layer, AsppClassifier) or layer.name.startswith(f"{HEAD_PREFIX}_")


def split_head_variables(generator: keras.Model) -> tuple[list, list]:
  """Splits a generator's trainable variables into backbone and heads, as the reference's
  `get_1x_lr_params_NOscale` / `get_10x_lr_params` (DAFormer: its `decode_head` param group).

  Args:
    generator: A model with `AsppClassifier` heads or "decode_head_*" layers (any tfdaseg
      generator).

  Returns:
    (backbone_trainable_variables, head_trainable_variables), each in model order. The heads
    are trained at `head_learning_rate_multiplier(generator)` times the learning rate.

  Raises:
    ValueError: when the model has no head layer.
  """
  heads = [layer for layer in generator.layers if _is_head(layer)]
  if not heads:
    raise ValueError(f"model {generator.name!r} has no AsppClassifier or {HEAD_PREFIX} head")
  head_ids = {id(v) for layer in heads for v in layer.trainable_variables}
  backbone = [v for v in generator.trainable_variables if id(v) not in head_ids]
  head = [v for v in generator.trainable_variables if id(v) in head_ids]
  return backbone, head


def no_decay_variables(generator: keras.Model) -> list:
  """The generator's trainable variables that the weight decay spares: those of the backbone
  whose name holds "norm", as DAFormer's `paramwise_cfg` (custom_keys norm decay_mult 0; its
  `head` key, lr_mult 10, matches first in the head: mmcv DefaultOptimizerConstructor). In the
  MiT these are every LayerNorm (patch embeddings, blocks, attention reductions, stages); the
  DeepLab-v2 generators have none.

  Args:
    generator: A tfdaseg generator.

  Returns:
    The variables, in model order.
  """
  head_ids = {id(v) for v in split_head_variables(generator)[1]}
  return [v for v in generator.trainable_variables if "norm" in v.path and id(v) not in head_ids]
