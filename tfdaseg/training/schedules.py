"""The reference's polynomial learning-rate decay, with an optional linear warm-up, as a
serialisable Keras schedule."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfdaseg")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = initial_learning_rate * (1 - step / decay_steps) ** power, 0 from decay_steps on.

  AdaptSegNet / ADVENT `lr_poly(base_lr, i_iter, max_iter, power)`, evaluated at the 0-based
  iteration before its update (the optimiser's `iterations`). With `warmup_steps`, the first
  steps scale it by 1 - (1 - warmup_ratio) * (1 - step / warmup_steps), mmcv's linear warm-up of
  the regular rate (mmcv 1.3.7 runner/hooks/lr_updater.py `get_warmup_lr`), which DAFormer uses
  for 1500 steps with ratio 1e-6 (DAFormer configs/_base_/schedules/poly10warm.py).

  Args:
    initial_learning_rate: The learning rate at step 0 (without warm-up).
    decay_steps: The reference's `num_steps` (250000): where the rate reaches 0.
    power: The reference's `power` (0.9).
    warmup_steps: Length of the linear warm-up (0: none).
    warmup_ratio: The warm-up's starting factor.

  Example:
    >>> float(PolyDecay(1.0, 100, 1.0)(50))
    0.5
  """

  def __init__(self, initial_learning_rate: float, decay_steps: int, power: float = 0.9,
               warmup_steps: int = 0, warmup_ratio: float = 1e-6):
    if decay_steps <= 0:
      raise ValueError(f"decay_steps must be positive, got {decay_steps}")
    if warmup_steps < 0:
      raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    self.initial_learning_rate = float(initial_learning_rate)
    self.decay_steps = int(decay_steps)
    self.power = float(power)
    self.warmup_steps = int(warmup_steps)
    self.warmup_ratio = float(warmup_ratio)

  def __call__(self, step):
    step = ops.cast(step, "float32")
    fraction = ops.minimum(step / float(self.decay_steps), 1.0)
    rate = self.initial_learning_rate * ops.power(1.0 - fraction, self.power)
    if not self.warmup_steps:
      return rate
    remaining = ops.maximum(1.0 - step / float(self.warmup_steps), 0.0)
    return rate * (1.0 - (1.0 - self.warmup_ratio) * remaining)

  def get_config(self) -> dict:
    return {"initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps, "power": self.power,
            "warmup_steps": self.warmup_steps, "warmup_ratio": self.warmup_ratio}
