"""The model registry: `build(name, **options)` for generators and discriminators."""

from typing import Any, Mapping

import keras

from tfdaseg.models import hrda as hrda_lib
from tfdaseg.registry import Registry

MODELS: Registry = Registry("model")


def build(name: str, hrda: Mapping[str, Any] | None = None, **options) -> keras.Model:
  """Builds the model registered as `name`.

  Args:
    name: A registered model name, e.g. "deeplab_v2_resnet101_multi".
    hrda: When given, HRDA settings (`tfdaseg.models.hrda.HrdaConfig` fields; {} for HRDA's
      defaults): the generator is wrapped in HRDA's multi-resolution training and inference.
    **options: Passed to the model's factory (num_classes, blocks, bn_mode, ...).

  Returns:
    The `keras.Model`.
  """
  factory = MODELS.get(name)
  model = factory(**options)
  if hrda is None:
    return model
  return hrda_lib.multi_resolution(
      model, hrda_lib.HrdaConfig.from_options(hrda),
      options.get("bn_mode", hrda_lib.default_bn_mode(factory)))
