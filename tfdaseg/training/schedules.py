"""The reference's polynomial learning-rate decay as a serialisable Keras schedule."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfdaseg")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
  """lr(step) = initial_learning_rate * (1 - step / decay_steps) ** power, 0 from decay_steps on.

  AdaptSegNet / ADVENT `lr_poly(base_lr, i_iter, max_iter, power)`, evaluated at the 0-based
  iteration before its update (the optimiser's `iterations`).

  Args:
    initial_learning_rate: The learning rate at step 0.
    decay_steps: The reference's `num_steps` (250000): where the rate reaches 0.
    power: The reference's `power` (0.9).

  Example:
    >>> float(PolyDecay(1.0, 100, 1.0)(50))
    0.5
  """

  def __init__(self, initial_learning_rate: float, decay_steps: int, power: float = 0.9):
    if decay_steps <= 0:
      raise ValueError(f"decay_steps must be positive, got {decay_steps}")
    self.initial_learning_rate = float(initial_learning_rate)
    self.decay_steps = int(decay_steps)
    self.power = float(power)

  def __call__(self, step):
    fraction = ops.minimum(ops.cast(step, "float32") / float(self.decay_steps), 1.0)
    return self.initial_learning_rate * ops.power(1.0 - fraction, self.power)

  def get_config(self) -> dict:
    return {"initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps, "power": self.power}
