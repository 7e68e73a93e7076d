"""The training model: generator, a method's networks, one optimiser per trained network, the step.

`train_step` follows AdaptSegNet's train_gta2cityscapes_multi.py for every method: per sub-batch,
the generator's losses (supervised, then adaptation) and the method networks' losses are
computed with the same weights; the generator's loss is differentiated with respect to the
generator only (the other networks are held fixed) and each network's loss with respect to that
network only (the generator's outputs are detached); gradients are summed over the `iter_size`
sub-batches; then every optimiser applies once, then the EMA networks are updated, then the
step counter advances. The per-replica loss-and-gradient computation is one `tf.function`
(XLA-compilable); the optimisers and EMA updates, which act across replicas, run outside it.
"""

import dataclasses
from typing import Callable, Mapping, Sequence

import keras
import tensorflow as tf

from tfdaseg import models
from tfdaseg.run_folder import checkpoint_key
from tfdaseg.methods.base import GENERATOR, Method, NetworkContext, NetworkSpec, StepContext
from tfdaseg.training import optimizers
from tfdaseg.training.precision import with_loss_scaling
from tfdaseg.utils.config_fields import field

NetworkBuilder = Callable[..., keras.Model]


@dataclasses.dataclass(frozen=True)
class OptimizationConfig:
  """The generator's optimiser and the schedule every poly-decayed optimiser shares.

  Args:
    learning_rate: Generator base rate (2.5e-4); the heads get the model's multiplier.
    momentum: SGD momentum (0.9).
    weight_decay: SGD L2 coefficient (5e-4), or AdamW's decoupled decay.
    power: Poly power (0.9).
    num_steps: Poly decay length (250000).
    optimizer: The generator's optimiser, "sgd" (the reference) or "adamw" (DAFormer).
    warmup_steps: Linear learning-rate warm-up length (0: none, the reference).
  """

  learning_rate: float = field(2.5e-4, "Generator base rate; heads 10x (reference 2.5e-4).",
                               above=0)
  momentum: float = field(0.9, "Generator SGD momentum (reference 0.9).", minimum=0, below=1)
  weight_decay: float = field(0.0005, "Generator L2 weight decay, PyTorch style (reference "
                              "0.0005).", minimum=0)
  power: float = field(0.9, "Poly learning-rate decay power (reference 0.9).", minimum=0)
  num_steps: int = field(250000, "Poly decay length in steps (reference 250000).", minimum=1)
  optimizer: str = field("sgd", "Generator optimiser: sgd (torch SGD, the reference) or adamw "
                         "(torch AdamW, DAFormer: --learning_rate=6e-5 --weight_decay=0.01 "
                         "--power=1).", choices=tuple(optimizers.GENERATOR_OPTIMIZERS.names()))
  warmup_steps: int = field(0, "Linear learning-rate warm-up from 1e-6 x over this many steps, "
                            "mmcv's (DAFormer 1500; 0 none, the reference).", minimum=0)


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


def moving_average_update(averages: Sequence, values: Sequence, decay: tf.Tensor) -> None:
  """average <- decay * average + (1 - decay) * value, correct under every strategy.

  Runs in a replica context: the update is merged into the cross-replica context and applied
  once per variable through `strategy.extended.update` (Model Garden ema_optimizer.py), so a
  mirrored average stays identical on every replica.

  Args:
    averages: The averaged variables.
    values: The variables averaged, in the same order.
    decay: float32 scalar.
  """
  def apply(average, value):
    return average.assign_sub(tf.cast(1.0 - decay, average.dtype) * (average - value))

  def update(strategy, pairs):
    for average, value in pairs:
      strategy.extended.update(average, apply, args=(value,))

  pairs = [(optimizers.tf_variable(a), optimizers.tf_variable(v))
           for a, v in zip(averages, values)]
  tf.distribute.get_replica_context().merge_call(update, args=(pairs,))


class DomainAdaptationModel(keras.Model):
  """Trains a generator with a method's objective.

  Create it inside `strategy.scope()` (with `build_training_model`), call `build_optimizers()`
  there too, then run `train_step` through `strategy.run` (`tfdaseg.training.loop`).

  Args:
    generator: The segmentation network (output dict, `tfdaseg.models.outputs`).
    method: The objective.
    networks: Name -> network, as declared by `method.networks()`.
    generator_optimizer: Optimiser of the generator.
    network_optimizers: Name -> optimiser of each network whose spec has one.
    num_classes: Classes the generator predicts.
    jit_compile: Compile the per-replica loss-and-gradient computation with XLA.
    random_seed: Base of the per-step stateless seeds (`StepContext.seed`).
    **kwargs: Base `keras.Model` arguments.
  """

  def __init__(self, generator: keras.Model, method: Method,
               networks: Mapping[str, keras.Model],
               generator_optimizer: keras.optimizers.Optimizer,
               network_optimizers: Mapping[str, keras.optimizers.Optimizer],
               num_classes: int, jit_compile: bool = False, random_seed: int = 0, **kwargs):
    super().__init__(**kwargs)
    specs = method.networks()
    if set(networks) != set(specs):
      raise ValueError(f"networks {sorted(networks)} are not the method's {sorted(specs)}")
    trained = {name for name, spec in specs.items() if spec.optimizer is not None}
    if set(network_optimizers) != trained:
      raise ValueError("every network with an OptimizerSpec needs exactly one optimiser")
    self.generator = generator
    self.method = method
    self.specs: dict[str, NetworkSpec] = specs
    self.networks = dict(networks)
    self.generator_optimizer = generator_optimizer
    self.network_optimizers = dict(network_optimizers)
    self.num_classes = num_classes
    self.jit_compile_step = jit_compile
    self.random_seed = int(random_seed)
    # The number of steps done; checkpointed, so a resumed run continues ramps and seeds.
    self.step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="step",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    self._gradients = tf.function(self._compute_gradients, jit_compile=jit_compile)

  def call(self, images, training=False):
    return self.generator(images, training=training)

  def all_networks(self) -> dict[str, keras.Model]:
    """"generator" and the method's networks, by name."""
    return {GENERATOR: self.generator, **self.networks}

  def build_optimizers(self) -> None:
    """Creates every optimiser's variables (call inside the strategy's scope, before training)."""
    self.generator_optimizer.build(self.generator.trainable_variables)
    for name, optimizer in self.network_optimizers.items():
      optimizer.build(self.networks[name].trainable_variables)

  def trackables(self) -> dict:
    """The objects a checkpoint holds; the generator under "generator", the step under "step"."""
    objects = {"generator": self.generator, "generator_optimizer": self.generator_optimizer,
               "step": self.step_counter}
    for name, network in self.networks.items():
      if self.specs[name].checkpointed:
        objects[checkpoint_key(name)] = network
    for name, optimizer in self.network_optimizers.items():
      objects[f"network_optimizer_{name}"] = optimizer
    return objects

  def learning_rates(self) -> dict[str, tf.Tensor]:
    """Current learning rates: generator backbone, generator heads and each trained network."""
    base = self.generator_optimizer.learning_rate
    rates = {"lr/generator": base}
    multipliers = set(getattr(self.generator_optimizer, "lr_multipliers", {}).values())
    inner = getattr(self.generator_optimizer, "inner_optimizer", None)
    multipliers |= set(getattr(inner, "lr_multipliers", {}).values())
    for multiplier in sorted(multipliers - {1.0}):
      rates[f"lr/generator_x{multiplier:g}"] = base * multiplier
    for name, optimizer in self.network_optimizers.items():
      rates[f"lr/{name}"] = optimizer.learning_rate
    return rates

  def step_seed(self, sub_batch: int) -> tf.Tensor:
    """The stateless seed of this step, sub-batch and replica (int32 [2])."""
    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
    seed = tf.constant([self.random_seed, 0], tf.int32)
    for data in (tf.cast(self.step_counter, tf.int32), sub_batch, replica):
      seed = tf.random.experimental.stateless_fold_in(seed, data)
    return seed

  def _compute_gradients(self, batch: Mapping[str, Mapping[str, tf.Tensor]], scale: float,
                         step: tf.Tensor, seed: tf.Tensor):
    """Losses and gradients of one sub-batch on one replica (the XLA-compilable core).

    Args:
      batch: Stream name -> pipeline batch.
      scale: 1 / (replicas * sub-batches): per-replica gradients are summed across replicas
        and sub-batches, so each loss is scaled inside the tape.
      step: int64 scalar, the step being computed.
      seed: int32 [2] stateless seed.

    Returns:
      (generator gradients, {name: network gradients}, {log name: unscaled scalar}).
    """
    with tf.GradientTape(persistent=True) as tape:
      ctx = StepContext(batch, self.all_networks(), self.num_classes, step, seed)
      generator_objective = self.method.generator_objective(ctx)
      network_objectives = self.method.network_objectives(ctx)
      generator_loss = self.generator_optimizer.scale_loss(generator_objective.total() * scale)
      network_losses = {
          name: self.network_optimizers[name].scale_loss(objective.total() * scale)
          for name, objective in network_objectives.items()}
    generator_gradients = tape.gradient(generator_loss, self.generator.trainable_variables)
    network_gradients = {
        name: tape.gradient(loss, self.networks[name].trainable_variables)
        for name, loss in network_losses.items()}
    del tape
    logs = {"loss/generator_total": generator_objective.total()}
    for objective in (generator_objective, *network_objectives.values()):
      logs.update({f"loss/{name}": value for name, (_, value) in objective.losses.items()})
      logs.update({f"metric/{name}": value for name, value in objective.metrics.items()})
    return generator_gradients, network_gradients, logs

  def _update_averages(self) -> None:
    networks = self.all_networks()
    for name, spec in self.specs.items():
      if spec.ema is None:
        continue
      teacher, student = networks[name], networks[spec.ema.of]
      averages, values = teacher.trainable_variables, student.trainable_variables
      if spec.ema.include_non_trainable:
        averages = averages + teacher.non_trainable_variables
        values = values + student.non_trainable_variables
      moving_average_update(averages, values, spec.ema.decay(self.step_counter))

  def train_step(self, batches):
    """One global step on this replica: `iter_size` sub-batches, then every optimiser applies,
    then the moving averages, then the step counter.

    Args:
      batches: A sequence of `iter_size` batches (each stream name -> pipeline batch), or one.

    Returns:
      Log name -> float32 scalar, averaged over the sub-batches (unscaled losses, metrics).
    """
    if isinstance(batches, Mapping):
      batches = (batches,)
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    scale = 1.0 / (replicas * len(batches))
    generator_gradients, network_gradients, logs = None, {}, []
    step = tf.identity(self.step_counter)
    for index, batch in enumerate(batches):
      step_generator, step_networks, step_logs = self._gradients(
          batch, scale, step, self.step_seed(index))
      generator_gradients = _accumulate(generator_gradients, step_generator)
      for name, gradients in step_networks.items():
        network_gradients[name] = _accumulate(network_gradients.get(name), gradients)
      logs.append(step_logs)
    _apply(self.generator_optimizer, generator_gradients, self.generator.trainable_variables)
    for name, gradients in network_gradients.items():
      _apply(self.network_optimizers[name], gradients, self.networks[name].trainable_variables)
    self._update_averages()
    self.step_counter.assign_add(1)
    return {key: tf.add_n([step[key] for step in logs]) / len(logs) for key in logs[0]}


def build_networks(method: Method, generator: keras.Model, num_classes: int,
                   builder: NetworkBuilder = models.build) -> dict[str, keras.Model]:
  """Builds the method's networks (call inside the strategy's scope).

  Raises:
    ValueError: when the generator lacks an output the method needs, or an EMA network's
      variables do not match those of the network it averages.
  """
  available = set(generator.output)
  missing = sorted(method.required_outputs() - available)
  if missing:
    raise ValueError(f"method {type(method).__name__} needs generator outputs {missing}; the "
                     f"generator {generator.name!r} has {sorted(available)} (aux_logits comes "
                     "from a multi-level model such as deeplab_v2_resnet101_multi; with a "
                     "single-level model use --levels=single and --lambda_seg=0)")
  context = NetworkContext(generator, num_classes, builder)
  networks = {name: spec.build(context) for name, spec in method.networks().items()}
  everything = {GENERATOR: generator, **networks}
  for name, spec in method.networks().items():
    if spec.ema is not None:
      shapes = [[tuple(v.shape) for v in net.trainable_variables]
                for net in (networks[name], everything[spec.ema.of])]
      if shapes[0] != shapes[1]:
        raise ValueError(f"network {name!r} averages {spec.ema.of!r} but their variables differ")
  return networks


def build_training_model(generator: keras.Model, method: Method, *, num_classes: int,
                         head_variables: Sequence, config: OptimizationConfig,
                         head_lr_multiplier: float, precision: str = "none",
                         jit_compile: bool = False, random_seed: int = 0,
                         network_builder: NetworkBuilder = models.build,
                         no_decay_variables: Sequence = ()) -> DomainAdaptationModel:
  """Assembles a `DomainAdaptationModel` with the reference's optimisers; call inside the scope.

  Args:
    generator: The segmentation network.
    method: The objective.
    num_classes: Classes the generator predicts.
    head_variables: The generator's head variables (trained at `head_lr_multiplier` x the
      base rate).
    config: The generator's optimiser and the shared schedule.
    head_lr_multiplier: The heads' learning-rate factor
      (`tfdaseg.models.head_learning_rate_multiplier`: the ResNets' 10x param group, 1 for VGG).
    precision: The `--mixed_precision` value (float16 gets loss scaling).
    jit_compile: XLA for the loss-and-gradient core.
    random_seed: Base of the per-step stateless seeds.
    network_builder: (registry name, **options) -> network, for the method's networks.
    no_decay_variables: Generator variables the weight decay spares
      (`tfdaseg.models.no_decay_variables`).

  Returns:
    The model, with optimisers built.
  """
  networks = build_networks(method, generator, num_classes, network_builder)
  generator_optimizer = with_loss_scaling(optimizers.generator_optimizer(
      config.learning_rate, config.num_steps, config.power, config.momentum,
      config.weight_decay, head_variables, head_lr_multiplier, config.optimizer,
      config.warmup_steps, no_decay_variables), precision)
  network_optimizers = {
      name: with_loss_scaling(optimizers.network_optimizer(
          spec.optimizer, config.num_steps, config.power, name=f"{name}_optimizer"), precision)
      for name, spec in method.networks().items() if spec.optimizer is not None}
  model = DomainAdaptationModel(generator, method, networks, generator_optimizer,
                                network_optimizers, num_classes=num_classes,
                                jit_compile=jit_compile, random_seed=random_seed)
  model.build_optimizers()
  return model
