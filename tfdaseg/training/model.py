"""The training model: generator, a method's discriminators, one optimiser per update, and the step.

`train_step` follows AdaptSegNet's train_gta2cityscapes_multi.py for every method: per sub-batch,
the generator's losses (supervised, then adaptation on target) and the discriminators' losses
are computed with the same weights; the generator's loss is differentiated with respect to the
generator only (the discriminators are held fixed) and each discriminator's loss with respect to
that discriminator only (the generator's outputs are detached); gradients are summed over the
`iter_size` sub-batches; then every optimiser applies once. The
per-replica loss-and-gradient computation is one `tf.function` (XLA-compilable); the optimisers,
which all-reduce across replicas, run outside it.
"""

import dataclasses
from typing import Callable, Mapping, Sequence

import keras
import tensorflow as tf

from tfdaseg import models
from tfdaseg.methods.base import Method, StepContext
from tfdaseg.training import optimizers
from tfdaseg.training.precision import with_loss_scaling

NetworkBuilder = Callable[..., keras.Model]


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """The reference's optimiser hyper-parameters (AdaptSegNet defaults).

  Args:
    learning_rate: Generator SGD base rate (2.5e-4); the heads get 10x.
    learning_rate_d: Discriminator Adam rate (1e-4).
    num_steps: Poly decay length (250000).
    power: Poly power (0.9).
    momentum: SGD momentum (0.9).
    weight_decay: SGD L2 coefficient (5e-4).
  """

  learning_rate: float = 2.5e-4
  learning_rate_d: float = 1e-4
  num_steps: int = 250000
  power: float = 0.9
  momentum: float = 0.9
  weight_decay: float = 5e-4


def _as_float32(outputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
  # Losses are computed in float32 whatever the compute policy of the models.
  return {key: tf.cast(value, tf.float32) for key, value in outputs.items()}


def _accumulate(total: list | None, new: Sequence) -> list:
  if total is None:
    return list(new)
  return [a if b is None else (b if a is None else a + b) for a, b in zip(total, new)]


def _apply(optimizer: keras.optimizers.Optimizer, gradients: Sequence,
           variables: Sequence) -> None:
  # Variables without a gradient are skipped, as torch.optim skips parameters whose grad is
  # None (no weight decay either).
  pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
  if pairs:
    optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])


class DomainAdaptationModel(keras.Model):
  """Trains a generator with a method's objective.

  Create it inside `strategy.scope()` (with `build_training_model`), call `build_optimizers()`
  there too, then run `train_step` through `strategy.run` (`tfdaseg.training.loop`).

  Args:
    generator: The segmentation network (output dict: "logits", "aux_logits", ...).
    method: The objective.
    discriminators: Name -> network, as declared by `method.discriminators()`.
    generator_optimizer: Optimiser of the generator.
    discriminator_optimizers: Name -> optimiser of each discriminator.
    num_classes: Classes the generator predicts.
    jit_compile: Compile the per-replica loss-and-gradient computation with XLA.
    **kwargs: Base `keras.Model` arguments.
  """

  def __init__(self, generator: keras.Model, method: Method,
               discriminators: Mapping[str, keras.Model],
               generator_optimizer: keras.optimizers.Optimizer,
               discriminator_optimizers: Mapping[str, keras.optimizers.Optimizer],
               num_classes: int, jit_compile: bool = False, **kwargs):
    super().__init__(**kwargs)
    if set(discriminators) != set(discriminator_optimizers):
      raise ValueError("every discriminator needs exactly one optimiser")
    self.generator = generator
    self.method = method
    self.discriminators = dict(discriminators)
    self.generator_optimizer = generator_optimizer
    self.discriminator_optimizers = dict(discriminator_optimizers)
    self.num_classes = num_classes
    self.jit_compile_step = jit_compile
    self._gradients = tf.function(self._compute_gradients, jit_compile=jit_compile)

  def call(self, images, training=False):
    return self.generator(images, training=training)

  def build_optimizers(self) -> None:
    """Creates every optimiser's variables (call inside the strategy's scope, before training)."""
    self.generator_optimizer.build(self.generator.trainable_variables)
    for name, optimizer in self.discriminator_optimizers.items():
      optimizer.build(self.discriminators[name].trainable_variables)

  def trackables(self) -> dict:
    """The objects a checkpoint holds; the generator under the name "generator"."""
    objects = {"generator": self.generator, "generator_optimizer": self.generator_optimizer}
    for name, network in self.discriminators.items():
      objects[f"discriminator_{name}"] = network
      objects[f"discriminator_optimizer_{name}"] = self.discriminator_optimizers[name]
    return objects

  def learning_rates(self) -> dict[str, tf.Tensor]:
    """Current learning rates: generator backbone, generator heads (10x) and each discriminator."""
    base = self.generator_optimizer.learning_rate
    rates = {"lr/generator": base}
    multipliers = set(getattr(self.generator_optimizer, "lr_multipliers", {}).values())
    inner = getattr(self.generator_optimizer, "inner_optimizer", None)
    multipliers |= set(getattr(inner, "lr_multipliers", {}).values())
    for multiplier in sorted(multipliers):
      rates[f"lr/generator_x{multiplier:g}"] = base * multiplier
    for name, optimizer in self.discriminator_optimizers.items():
      rates[f"lr/discriminator_{name}"] = optimizer.learning_rate
    return rates

  def _compute_gradients(self, batch: Mapping[str, Mapping[str, tf.Tensor]], scale: float):
    """Losses and gradients of one sub-batch on one replica (the XLA-compilable core).

    Args:
      batch: Stream name -> pipeline batch.
      scale: 1 / (replicas * sub-batches): per-replica gradients are summed across replicas
        and sub-batches, so each loss is scaled inside the tape.

    Returns:
      (generator gradients, {name: discriminator gradients}, {log name: unscaled scalar}).
    """
    with tf.GradientTape(persistent=True) as tape:
      outputs = {stream: _as_float32(self.generator(batch[stream]["image"], training=True))
                 for stream in self.method.streams}
      ctx = StepContext(batch, outputs, self.discriminators, self.num_classes)
      generator_objective = self.method.generator_objective(ctx)
      discriminator_objectives = self.method.discriminator_objectives(ctx)
      generator_loss = self.generator_optimizer.scale_loss(generator_objective.total() * scale)
      discriminator_losses = {
          name: self.discriminator_optimizers[name].scale_loss(objective.total() * scale)
          for name, objective in discriminator_objectives.items()}
    generator_gradients = tape.gradient(generator_loss, self.generator.trainable_variables)
    discriminator_gradients = {
        name: tape.gradient(loss, self.discriminators[name].trainable_variables)
        for name, loss in discriminator_losses.items()}
    del tape
    logs = {"loss/generator_total": generator_objective.total()}
    for objective in (generator_objective, *discriminator_objectives.values()):
      logs.update({f"loss/{name}": value for name, (_, value) in objective.losses.items()})
      logs.update({f"metric/{name}": value for name, value in objective.metrics.items()})
    return generator_gradients, discriminator_gradients, logs

  def train_step(self, batches):
    """One global step on this replica: `iter_size` sub-batches, then every optimiser applies.

    Args:
      batches: A sequence of `iter_size` batches (each stream name -> pipeline batch), or one.

    Returns:
      Log name -> float32 scalar, averaged over the sub-batches (unscaled losses, metrics).
    """
    if isinstance(batches, Mapping):
      batches = (batches,)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    scale = 1.0 / (replicas * len(batches))
    generator_gradients, discriminator_gradients, logs = None, {}, []
    for batch in batches:
      step_generator, step_discriminators, step_logs = self._gradients(batch, scale)
      generator_gradients = _accumulate(generator_gradients, step_generator)
      for name, gradients in step_discriminators.items():
        discriminator_gradients[name] = _accumulate(discriminator_gradients.get(name), gradients)
      logs.append(step_logs)
    _apply(self.generator_optimizer, generator_gradients, self.generator.trainable_variables)
    for name, gradients in discriminator_gradients.items():
      _apply(self.discriminator_optimizers[name], gradients,
             self.discriminators[name].trainable_variables)
    return {key: tf.add_n([step[key] for step in logs]) / len(logs) for key in logs[0]}


def build_discriminators(method: Method, generator: keras.Model,
                         builder: NetworkBuilder) -> dict[str, keras.Model]:
  """Builds the method's discriminators, sized to the generator outputs they read.

  Raises:
    ValueError: when the generator lacks an output the method needs.
  """
  available = set(generator.output)
  missing = sorted(method.required_outputs() - available)
  if missing:
    raise ValueError(f"method {type(method).__name__} needs generator outputs {missing}; the "
                     f"generator {generator.name!r} has {sorted(available)} (aux_logits comes "
                     "from a multi-level model such as deeplab_v2_resnet101_multi; with a "
                     "single-level model use --levels=single and --lambda_seg=0)")
  return {name: builder(spec.model, num_channels=int(generator.output[spec.reads].shape[-1]),
                        **dict(spec.options))
          for name, spec in method.discriminators().items()}


def build_training_model(generator: keras.Model, method: Method, *, num_classes: int,
                         head_variables: Sequence, config: OptimizerConfig,
                         precision: str = "none", jit_compile: bool = False,
                         network_builder: NetworkBuilder = models.build) -> DomainAdaptationModel:
  """Assembles a `DomainAdaptationModel` with the reference's optimisers; call inside the scope.

  Args:
    generator: The segmentation network.
    method: The objective.
    num_classes: Classes the generator predicts.
    head_variables: The generator's head variables (trained at 10x the base rate).
    config: Optimiser hyper-parameters.
    precision: The `--mixed_precision` value (float16 gets loss scaling).
    jit_compile: XLA for the loss-and-gradient core.
    network_builder: (registry name, **options) -> discriminator.

  Returns:
    The model, with optimisers built.
  """
  discriminators = build_discriminators(method, generator, network_builder)
  generator_optimizer = with_loss_scaling(optimizers.generator_optimizer(
      config.learning_rate, config.num_steps, config.power, config.momentum,
      config.weight_decay, head_variables), precision)
  discriminator_optimizers = {
      name: with_loss_scaling(optimizers.discriminator_optimizer(
          config.learning_rate_d, config.num_steps, config.power,
          name=f"discriminator_adam_{name}"), precision)
      for name in discriminators}
  model = DomainAdaptationModel(generator, method, discriminators, generator_optimizer,
                                discriminator_optimizers, num_classes=num_classes,
                                jit_compile=jit_compile)
  model.build_optimizers()
  return model
