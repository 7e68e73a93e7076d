"""Mixed precision: the Keras policy of `--mixed_precision`; loss scaling for float16."""

import keras

# --mixed_precision value -> Keras dtype policy.
POLICIES = {"none": "float32", "mixed_float16": "mixed_float16", "mixed_bfloat16": "mixed_bfloat16"}


def set_precision(name: str) -> None:
  """Sets the global Keras policy; models built afterwards compute in that precision.

  Raises:
    ValueError: for an unknown name.
  """
  if name not in POLICIES:
    raise ValueError(f"unknown mixed_precision {name!r}; known: {', '.join(POLICIES)}")
  keras.mixed_precision.set_global_policy(POLICIES[name])


def needs_loss_scaling(name: str) -> bool:
  """float16 gradients underflow without loss scaling; bfloat16 has float32's exponent range."""
  return name == "mixed_float16"


def with_loss_scaling(optimizer: keras.optimizers.Optimizer,
                      precision: str) -> keras.optimizers.Optimizer:
  """Wraps `optimizer` in a dynamic `LossScaleOptimizer` when `precision` needs it."""
  if needs_loss_scaling(precision):
    return keras.optimizers.LossScaleOptimizer(optimizer, name=f"{optimizer.name}_loss_scale")
  return optimizer
