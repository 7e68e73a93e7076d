"""The reference's optimisers: PyTorch-semantics SGD (or AdamW, DAFormer's) for the generator,
Adam for discriminators, and the registry a method network's `OptimizerSpec` names.

Keras' SGD folds the learning rate into its velocity and its `weight_decay` is decoupled; the
reference uses torch.optim.SGD, whose L2 term is added to the gradient before momentum and whose
momentum buffer is independent of the learning rate (which matters under a decaying schedule).
`TorchSGD` reproduces it, with per-variable learning-rate multipliers for the reference's
parameter groups (the heads at 10x).
"""

from typing import Mapping, Sequence

import keras
import tensorflow as tf
from keras import ops

from tfdaseg.registry import Registry
from tfdaseg.training.schedules import PolyDecay

# torch.optim.Adam's default epsilon; Keras' default is 1e-7.
TORCH_ADAM_EPSILON = 1e-8


class MultipliedRates(keras.optimizers.Optimizer):
  """An optimiser whose variables learn at the base rate times their multiplier, and are decayed
  by the weight decay times theirs (mmcv param groups: `lr_mult`, `decay_mult`).

  Args:
    learning_rate: A float or a `LearningRateSchedule`.
    lr_multipliers: Variable path -> learning-rate multiplier; other variables use 1.
    decay_multipliers: Variable path -> weight-decay multiplier; other variables use 1.
    **kwargs: Base `keras.optimizers.Optimizer` arguments.
  """

  def __init__(self, learning_rate, lr_multipliers: Mapping[str, float] | None = None,
               decay_multipliers: Mapping[str, float] | None = None, **kwargs):
    super().__init__(learning_rate=learning_rate, **kwargs)
    self.lr_multipliers = dict(lr_multipliers or {})
    self.decay_multipliers = dict(decay_multipliers or {})

  def build(self, variables):
    super().build(variables)
    paths = [v.path for v in variables]
    if len(set(paths)) != len(paths):
      raise ValueError(f"{type(self).__name__} needs unique variable paths to assign "
                       "learning-rate multipliers")
    for name, multipliers in (("lr_multipliers", self.lr_multipliers),
                              ("decay_multipliers", self.decay_multipliers)):
      unknown = sorted(set(multipliers) - set(paths))
      if unknown:
        raise ValueError(f"{name} name variables the optimiser does not train: {unknown}")
    self._multipliers = [self.lr_multipliers.get(path, 1.0) for path in paths]
    self._decay_multipliers = [self.decay_multipliers.get(path, 1.0) for path in paths]

  def _index_and_rate(self, variable, learning_rate) -> tuple:
    """(the variable's index, its learning rate: the base rate times its multiplier)."""
    index = self._get_variable_index(variable)
    return index, ops.cast(learning_rate, variable.dtype) * self._multipliers[index]

  def get_config(self) -> dict:
    config = super().get_config()
    config["lr_multipliers"] = dict(self.lr_multipliers)
    config["decay_multipliers"] = dict(self.decay_multipliers)
    return config


def tf_variable(variable):
  """The (distributed) tf.Variable a Keras 3 variable wraps, which `strategy.extended.update` and
  raw resource ops need; a tf.Variable is returned as it is."""
  return variable.value if isinstance(variable, keras.Variable) else variable


@keras.saving.register_keras_serializable(package="tfdaseg")
class TorchSGD(MultipliedRates):
  """SGD with momentum and coupled L2 weight decay, exactly as torch.optim.SGD (dampening 0).

  Per variable w with gradient g and learning rate lr * multiplier(w):
    d = g + l2_weight_decay * w;  buf = momentum * buf + d;  w = w - lr * multiplier * buf.

  Args:
    learning_rate: A float or a `LearningRateSchedule`.
    momentum: Momentum factor (reference 0.9).
    l2_weight_decay: Coefficient of the L2 term added to the gradient (reference 5e-4).
    lr_multipliers: Variable path -> learning-rate multiplier (the reference's 10x heads);
      other variables use 1.
    decay_multipliers: Variable path -> multiplier of `l2_weight_decay`; other variables use 1.
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
               lr_multipliers: Mapping[str, float] | None = None,
               decay_multipliers: Mapping[str, float] | None = None, name: str = "torch_sgd",
               **kwargs):
    if kwargs.get("weight_decay"):
      raise ValueError("TorchSGD applies L2 decay itself: pass l2_weight_decay, not weight_decay")
    super().__init__(learning_rate=learning_rate, lr_multipliers=lr_multipliers,
                     decay_multipliers=decay_multipliers, name=name, **kwargs)
    self.momentum = float(momentum)
    self.l2_weight_decay = float(l2_weight_decay)

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")

  def update_step(self, gradient, variable, learning_rate):
    index, learning_rate = self._index_and_rate(variable, learning_rate)
    direction = ops.cast(gradient, variable.dtype)
    decay = self.l2_weight_decay * self._decay_multipliers[index]
    if decay:
      direction = direction + decay * variable
    # buf = momentum * buf + d; w -= lr * buf in one kernel per variable, where the separate
    # assigns took 7 passes over the weights (56 -> 41 ms per apply to DeepLab-v2 R101, 43M).
    tf.raw_ops.ResourceApplyMomentum(
        var=tf_variable(variable).handle, accum=tf_variable(self.momentums[index]).handle,
        lr=learning_rate, grad=direction, momentum=ops.cast(self.momentum, variable.dtype))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({"momentum": self.momentum, "l2_weight_decay": self.l2_weight_decay})
    return config


@keras.saving.register_keras_serializable(package="tfdaseg")
class TorchAdamW(MultipliedRates):
  """torch.optim.AdamW (amsgrad off) with per-variable learning-rate multipliers.

  Per variable w with gradient g, step t and learning rate lr * multiplier(w) = a:
    w = w * (1 - a * decay);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
    w = w - a / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + epsilon).
  Keras' AdamW differs: its epsilon is not scaled by the bias correction and its decay ignores
  the multipliers (mmcv's param groups scale both, DAFormer's head lr_mult 10).

  Args:
    learning_rate: A float or a `LearningRateSchedule`.
    beta_1: First-moment decay (torch 0.9).
    beta_2: Second-moment decay (torch 0.999).
    epsilon: torch's 1e-8.
    decoupled_weight_decay: torch's `weight_decay` (DAFormer 0.01).
    lr_multipliers: Variable path -> learning-rate multiplier; other variables use 1.
    decay_multipliers: Variable path -> multiplier of the decay; other variables use 1.
    name: Optimiser name.
    **kwargs: Base `keras.optimizers.Optimizer` arguments (not `weight_decay`).
  """

  def __init__(self, learning_rate=0.001, beta_1: float = 0.9, beta_2: float = 0.999,
               epsilon: float = TORCH_ADAM_EPSILON, decoupled_weight_decay: float = 0.01,
               lr_multipliers: Mapping[str, float] | None = None,
               decay_multipliers: Mapping[str, float] | None = None, name: str = "torch_adamw",
               **kwargs):
    if kwargs.get("weight_decay"):
      raise ValueError("TorchAdamW applies the decay itself: pass decoupled_weight_decay")
    super().__init__(learning_rate=learning_rate, lr_multipliers=lr_multipliers,
                     decay_multipliers=decay_multipliers, name=name, **kwargs)
    self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
    self.decoupled_weight_decay = float(decoupled_weight_decay)

  def build(self, variables):
    if self.built:
      return
    super().build(variables)
    self.momentums = self.add_optimizer_variables(variables, "momentum")
    self.velocities = self.add_optimizer_variables(variables, "velocity")

  def update_step(self, gradient, variable, learning_rate):
    index, rate = self._index_and_rate(variable, learning_rate)
    gradient = ops.cast(gradient, variable.dtype)
    # The bias corrections in float64, as torch computes them (Python floats): in float32,
    # 1 - 0.999^t is off by 1e-5 relative at small t.
    step = ops.cast(self.iterations + 1, "float64")
    decay = self.decoupled_weight_decay * self._decay_multipliers[index]
    if decay:
      self.assign(variable, variable * (1.0 - rate * decay))
    m, v = self.momentums[index], self.velocities[index]
    self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * gradient)
    self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * ops.square(gradient))
    first, second = (
        ops.cast(1.0 - ops.power(ops.convert_to_tensor(beta, "float64"), step), variable.dtype)
        for beta in (self.beta_1, self.beta_2))
    self.assign_sub(variable, rate / first * m / (ops.sqrt(v) / ops.sqrt(second) + self.epsilon))

  def get_config(self) -> dict:
    config = super().get_config()
    config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                   "decoupled_weight_decay": self.decoupled_weight_decay})
    return config



def _generator_sgd(schedule, weight_decay: float, momentum: float,
                   lr_multipliers: Mapping[str, float],
                   decay_multipliers: Mapping[str, float]) -> TorchSGD:
  return TorchSGD(schedule, momentum=momentum, l2_weight_decay=weight_decay,
                  lr_multipliers=lr_multipliers, decay_multipliers=decay_multipliers,
                  name="generator_sgd")


def _generator_adamw(schedule, weight_decay: float, momentum: float,
                     lr_multipliers: Mapping[str, float],
                     decay_multipliers: Mapping[str, float]) -> TorchAdamW:
  # DAFormer configs/_base_/schedules/adamw.py: betas (0.9, 0.999); momentum is SGD's only.
  del momentum
  return TorchAdamW(schedule, decoupled_weight_decay=weight_decay, lr_multipliers=lr_multipliers,
                    decay_multipliers=decay_multipliers, name="generator_adamw")


# --optimizer -> (schedule, weight decay, momentum, lr multipliers, decay multipliers) -> the
# generator's optimiser.
GENERATOR_OPTIMIZERS: Registry = Registry("generator optimizer")
GENERATOR_OPTIMIZERS.register("sgd")(_generator_sgd)
GENERATOR_OPTIMIZERS.register("adamw")(_generator_adamw)


def generator_optimizer(learning_rate: float, num_steps: int, power: float, momentum: float,
                        weight_decay: float, head_variables: Sequence,
                        head_lr_multiplier: float = 10.0, optimizer: str = "sgd",
                        warmup_steps: int = 0,
                        no_decay_variables: Sequence = ()) -> keras.optimizers.Optimizer:
  """The generator's optimiser: poly-decayed TorchSGD (the reference) or TorchAdamW, heads at 10x.

  Args:
    learning_rate: Base learning rate (reference 2.5e-4; DAFormer's AdamW 6e-5).
    num_steps: Steps over which the rate decays to 0 (reference 250000).
    power: Poly power (0.9; DAFormer 1.0).
    momentum: SGD momentum, 0.9 in the reference.
    weight_decay: SGD's L2 coefficient (5e-4), or AdamW's decoupled decay (DAFormer 0.01).
    head_variables: The classifier heads' variables (`tfdaseg.models.split_head_variables`).
    head_lr_multiplier: The heads' learning-rate factor (the reference's 10x param group).
    optimizer: "sgd" or "adamw" (`GENERATOR_OPTIMIZERS`).
    warmup_steps: Linear warm-up length (0: none; DAFormer 1500).
    no_decay_variables: Variables never decayed (`tfdaseg.models.no_decay_variables`: DAFormer's
      encoder norms).

  Returns:
    The optimiser (not built).
  """
  schedule = PolyDecay(learning_rate, num_steps, power, warmup_steps=warmup_steps)
  return GENERATOR_OPTIMIZERS.get(optimizer)(
      schedule, weight_decay, momentum, {v.path: head_lr_multiplier for v in head_variables},
      {v.path: 0.0 for v in no_decay_variables})


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
