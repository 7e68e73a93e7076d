"""The reference's optimisers: PyTorch-semantics SGD for the generator, Adam for discriminators,
and the registry a method network's `OptimizerSpec` names.

Keras' SGD folds the learning rate into its velocity and its `weight_decay` is decoupled; the
reference uses torch.optim.SGD, whose L2 term is added to the gradient before momentum and whose
momentum buffer is independent of the learning rate (which matters under a decaying schedule).
`TorchSGD` reproduces it, with per-variable learning-rate multipliers for the reference's
parameter groups (the heads at 10x).
"""

from typing import Mapping, Sequence

import keras
from keras import ops

from tfdaseg.registry import Registry
from tfdaseg.training.schedules import PolyDecay

# torch.optim.Adam's default epsilon; Keras' default is 1e-7.
TORCH_ADAM_EPSILON = 1e-8


@keras.saving.register_keras_serializable(package="tfdaseg")
class TorchSGD(keras.optimizers.Optimizer):
  """SGD with momentum and coupled L2 weight decay, exactly as torch.optim.SGD (dampening 0).

  Per variable w with gradient g and learning rate lr * multiplier(w):
    d = g + l2_weight_decay * w;  buf = momentum * buf + d;  w = w - lr * multiplier * buf.

  Args:
    learning_rate: A float or a `LearningRateSchedule`.
    momentum: Momentum factor (reference 0.9).
    l2_weight_decay: Coefficient of the L2 term added to the gradient (reference 5e-4).
    lr_multipliers: Variable path -> learning-rate multiplier (the reference's 10x heads);
      other variables use 1.
    name: Optimiser name.
    **kwargs: Base `keras.optimizers.Optimizer` arguments (not `weight_decay`, which is
      Keras' decoupled decay).

  Example:
    >>> w = keras.Variable([1.0])
    >>> opt = TorchSGD(0.1, momentum=0.9, l2_weight_decay=0.5)
    >>> opt.apply([keras.ops.convert_to_tensor([1.0])], [w])
    >>> [round(float(v), 2) for v in w.numpy()]
    [0.85]
  """

  def __init__(self, learning_rate=0.01, momentum: float = 0.9, l2_weight_decay: float = 0.0,
               lr_multipliers: Mapping[str, float] | None = None, name: str = "torch_sgd",
               **kwargs):
    if kwargs.get("weight_decay"):
      raise ValueError("TorchSGD applies L2 decay itself: pass l2_weight_decay, not weight_decay")
    super().__init__(learning_rate=learning_rate, name=name, **kwargs)
    self.momentum = float(momentum)
    self.l2_weight_decay = float(l2_weight_decay)
    self.lr_multipliers = dict(lr_multipliers or {})

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    paths = [v.path for v in variables]
    if len(set(paths)) != len(paths):
      raise ValueError("TorchSGD needs unique variable paths to assign learning-rate multipliers")
    unknown = sorted(set(self.lr_multipliers) - set(paths))
    if unknown:
      raise ValueError(f"lr_multipliers name variables the optimiser does not train: {unknown}")
    self._multipliers = [self.lr_multipliers.get(path, 1.0) for path in paths]
    self.momentums = self.add_optimizer_variables(variables, "momentum")

  def update_step(self, gradient, variable, learning_rate):
    index = self._get_variable_index(variable)
    learning_rate = ops.cast(learning_rate, variable.dtype) * self._multipliers[index]
    direction = ops.cast(gradient, variable.dtype)
    if self.l2_weight_decay:
      direction = direction + self.l2_weight_decay * variable
    buffer = self.momentums[index]
    self.assign(buffer, self.momentum * buffer + direction)
    self.assign_sub(variable, learning_rate * buffer)

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({"momentum": self.momentum, "l2_weight_decay": self.l2_weight_decay,
                   "lr_multipliers": dict(self.lr_multipliers)})
    return config


def generator_optimizer(learning_rate: float, num_steps: int, power: float, momentum: float,
                        weight_decay: float, head_variables: Sequence,
                        head_lr_multiplier: float = 10.0) -> TorchSGD:
  """The reference's generator optimiser: poly-decayed TorchSGD with the heads at 10x.

  Args:
    learning_rate: Base learning rate (reference 2.5e-4).
    num_steps: Steps over which the rate decays to 0 (reference 250000).
    power: Poly power (0.9).
    momentum: 0.9 in the reference.
    weight_decay: L2 coefficient (5e-4).
    head_variables: The classifier heads' variables (`tfdaseg.models.split_head_variables`).
    head_lr_multiplier: The heads' learning-rate factor (the reference's 10x param group).

  Returns:
    The optimiser (not built).
  """
  return TorchSGD(PolyDecay(learning_rate, num_steps, power), momentum=momentum,
                  l2_weight_decay=weight_decay,
                  lr_multipliers={v.path: head_lr_multiplier for v in head_variables},
                  name="generator_sgd")


def adam(learning_rate, name: str, beta_1: float = 0.9, beta_2: float = 0.999
         ) -> keras.optimizers.Adam:
  """torch.optim.Adam (epsilon 1e-8); the reference's discriminators use betas (0.9, 0.99)."""
  return keras.optimizers.Adam(learning_rate, beta_1=beta_1, beta_2=beta_2,
                               epsilon=TORCH_ADAM_EPSILON, name=name)


def sgd(learning_rate, name: str, momentum: float = 0.9, weight_decay: float = 0.0) -> TorchSGD:
  """torch.optim.SGD with coupled L2 decay."""
  return TorchSGD(learning_rate, momentum=momentum, l2_weight_decay=weight_decay, name=name)


# `OptimizerSpec.name` -> (learning rate or schedule, name, **options) -> optimiser.
OPTIMIZERS: Registry = Registry("optimizer")
OPTIMIZERS.register("adam")(adam)
OPTIMIZERS.register("sgd")(sgd)
SCHEDULES = ("poly", "constant")


def network_optimizer(spec, num_steps: int, power: float,
                      name: str) -> keras.optimizers.Optimizer:
  """The optimiser a method network's `OptimizerSpec` asks for.

  Args:
    spec: A `tfdaseg.methods.OptimizerSpec`.
    num_steps: The run's poly decay length.
    power: The run's poly power.
    name: Optimiser name.

  Returns:
    The optimiser (not built).

  Raises:
    KeyError: for an unknown optimiser. ValueError: for an unknown schedule.
  """
  if spec.schedule not in SCHEDULES:
    raise ValueError(f"unknown schedule {spec.schedule!r}; known: {', '.join(SCHEDULES)}")
  rate = (PolyDecay(spec.learning_rate, num_steps, power) if spec.schedule == "poly"
          else spec.learning_rate)
  return OPTIMIZERS.get(spec.name)(rate, name=name, **dict(spec.options))
