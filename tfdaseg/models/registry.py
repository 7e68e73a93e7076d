"""The model registry: `build(name, **options)` for generators and discriminators."""

import keras

from tfdaseg.registry import Registry

MODELS: Registry = Registry("model")


def build(name: str, **options) -> keras.Model:
  """Builds the model registered as `name`.

  Args:
    name: A registered model name, e.g. "deeplab_v2_resnet101_multi".
    **options: Passed to the model's factory (num_classes, blocks, bn_mode, ...).

  Returns:
    The `keras.Model`.
  """
  return MODELS.get(name)(**options)
