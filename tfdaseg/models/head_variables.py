"""Which generator variables belong to the classifier heads (trained at 10x the learning rate)."""

import keras

from tfdaseg.models.aspp_classifier import AsppClassifier


def split_head_variables(generator: keras.Model) -> tuple[list, list]:
  """Splits a generator's trainable variables into backbone and heads, as the reference's
  `get_1x_lr_params_NOscale` / `get_10x_lr_params`.

  Args:
    generator: A model with `AsppClassifier` heads (any tfdaseg generator).

  Returns:
    (backbone_trainable_variables, head_trainable_variables), each in model order.

  Raises:
    ValueError: when the model has no `AsppClassifier` layer.
  """
  heads = [layer for layer in generator.layers if isinstance(layer, AsppClassifier)]
  if not heads:
    raise ValueError(f"model {generator.name!r} has no AsppClassifier head")
  head_ids = {id(v) for layer in heads for v in layer.trainable_variables}
  backbone = [v for v in generator.trainable_variables if id(v) not in head_ids]
  head = [v for v in generator.trainable_variables if id(v) in head_ids]
  return backbone, head
