"""The interface between a training objective (a method) and the trainer.

A method only says which data streams it reads, which discriminators it adds, and which losses it
computes from the generator's outputs; the trainer (`tfdaseg.training.model`) owns the update
order, gradient accumulation, precision, distribution and XLA. Every loss is a float32 scalar
averaged over the replica's batch; the trainer scales it for replicas and sub-batches.

Later methods fit the same hooks: per-pixel or per-class weights of the supervised loss
(override `supervised_objective`), extra data keys (they arrive in `StepContext.batch`), other
networks trained against the generator (`discriminators`).
"""

import dataclasses
from typing import Any, Callable, ClassVar, Mapping

import keras
import tensorflow as tf

from tfdaseg.methods import losses

SOURCE = "source"
TARGET = "target"

# Generator output keys (the models' output-dict contract) per level: the main head (the
# reference's pred2, layer4) and the auxiliary head (pred1, layer3).
LOGITS = {"main": "logits", "aux": "aux_logits"}
FEATURES = {"main": "features", "aux": "aux_features"}


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """Hyper-parameters of every method (each reads the ones it needs).

  Args:
    num_classes: Classes the generator predicts.
    lambda_seg: Weight of the auxiliary head's cross-entropy (reference 0.1).
    lambda_adv_target1: Adversarial weight of the auxiliary level (reference 0.0002).
    lambda_adv_target2: Adversarial weight of the main level (reference 0.001).
    lambda_ent_target1: Entropy weight of the auxiliary level (ADVENT 0.0002).
    lambda_ent_target2: Entropy weight of the main level (ADVENT 0.001).
    levels: "multi" (aux and main heads) or "single" (main head only).
    adapt_space: "output" (softmax maps) or "feature" (the heads' input features).
    gan: Adversarial loss, a key of `tfdaseg.methods.adversarial.GAN_LOSSES` ("vanilla", "ls").
    advent_mode: "minent", "advent" or "both".
    discriminator_base_filters: Width of the discriminators' first conv (reference 64).
  """

  num_classes: int
  lambda_seg: float = 0.1
  lambda_adv_target1: float = 0.0002
  lambda_adv_target2: float = 0.001
  lambda_ent_target1: float = 0.0002
  lambda_ent_target2: float = 0.001
  levels: str = "multi"
  adapt_space: str = "output"
  gan: str = "vanilla"
  advent_mode: str = "advent"
  discriminator_base_filters: int = 64


@dataclasses.dataclass(frozen=True)
class DiscriminatorSpec:
  """A network a method trains against the generator (own optimiser, own loss).

  Args:
    model: Registry name in `tfdaseg.models` ("output_space_discriminator", ...).
    reads: The generator output whose channel count the discriminator's input has.
    options: Further build options (base_filters, ...).
  """

  model: str
  reads: str
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Objective:
  """Named loss terms (weight, unweighted float32 scalar) plus metrics that are only logged."""

  def __init__(self):
    self.losses: dict[str, tuple[float, tf.Tensor]] = {}
    self.metrics: dict[str, tf.Tensor] = {}

  def add_loss(self, name: str, value: tf.Tensor, weight: float = 1.0) -> None:
    """Adds `weight * value` to the total under `name` (names must be unique)."""
    if name in self.losses:
      raise ValueError(f"loss {name!r} added twice")
    self.losses[name] = (float(weight), tf.cast(value, tf.float32))

  def add_metric(self, name: str, value: tf.Tensor) -> None:
    """Records a scalar that is logged but not optimised."""
    self.metrics[name] = tf.cast(value, tf.float32)

  def merge(self, other: "Objective") -> "Objective":
    """Returns a new objective with the terms of both."""
    merged = Objective()
    for source in (self, other):
      for name, (weight, value) in source.losses.items():
        merged.add_loss(name, value, weight)
      merged.metrics.update(source.metrics)
    return merged

  def total(self) -> tf.Tensor:
    """The weighted sum of the losses (0 when there are none)."""
    return tf.add_n([tf.constant(0.0)] + [w * v for w, v in self.losses.values()])


class StepContext:
  """What a method sees of one (sub-)batch on one replica.

  Args:
    batch: Stream name -> the pipeline's batch dict ("image", "label", ...).
    outputs: Stream name -> the generator's output dict, cast to float32.
    discriminators: Name -> the method's discriminators.
    num_classes: Classes the generator predicts.
  """

  def __init__(self, batch: Mapping[str, Mapping[str, tf.Tensor]],
               outputs: Mapping[str, Mapping[str, tf.Tensor]],
               discriminators: Mapping[str, keras.Model], num_classes: int):
    self.batch = batch
    self.outputs = outputs
    self.discriminators = discriminators
    self.num_classes = num_classes
    self._memo: dict[tuple, tf.Tensor] = {}

  def memo(self, key: tuple, compute: Callable[[], tf.Tensor]) -> tf.Tensor:
    """Returns `compute()`, computed once per step for `key` (shared by several losses)."""
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]

  def upsampled_logits(self, stream: str, key: str = "logits") -> tf.Tensor:
    """The generator's `key` output on `stream`, upsampled to the stream's image size.

    The reference upsamples every prediction to the input size (nn.Upsample, bilinear,
    align_corners=True) before its losses and discriminators.
    """
    def compute():
      size = tf.shape(self.batch[stream]["image"])[1:3]
      return losses.upsample_bilinear(self.outputs[stream][key], size)
    return self.memo(("upsampled", stream, key), compute)

  def probabilities(self, stream: str, key: str = "logits") -> tf.Tensor:
    """Softmax of `upsampled_logits(stream, key)`."""
    return self.memo(("softmax", stream, key),
                     lambda: tf.nn.softmax(self.upsampled_logits(stream, key), axis=-1))

  def discriminate(self, name: str, inputs: tf.Tensor) -> tf.Tensor:
    """Runs discriminator `name` (training mode) and returns float32 logits."""
    return tf.cast(self.discriminators[name](inputs, training=True), tf.float32)


class Method:
  """A training objective. Subclasses register with `METHODS.register(name)`.

  Class attributes:
    streams: Data streams read every step ("source", "target").
    labelled_streams: Streams trained with the supervised loss (their labels are needed).
  """

  streams: ClassVar[tuple[str, ...]] = (SOURCE, TARGET)
  labelled_streams: ClassVar[tuple[str, ...]] = (SOURCE,)

  def __init__(self, config: MethodConfig):
    self.config = config

  def discriminators(self) -> dict[str, DiscriminatorSpec]:
    """Name -> spec of the networks trained against the generator (none by default)."""
    return {}

  def required_outputs(self) -> set[str]:
    """Generator output keys this method reads (checked against the generator at build)."""
    keys = {spec.reads for spec in self.discriminators().values()} | {LOGITS["main"]}
    if self.config.lambda_seg:
      keys.add(LOGITS["aux"])
    return keys

  def supervised_objective(self, ctx: StepContext) -> Objective:
    """Cross-entropy on every labelled stream: CE(main) + lambda_seg * CE(aux).

    Logits are upsampled to the label size inside the loss. The aux term is skipped when
    lambda_seg is 0 (the reference's single-level setting).
    """
    objective = Objective()
    for stream in self.labelled_streams:
      labels = ctx.batch[stream]["label"]
      outputs = ctx.outputs[stream]
      objective.add_loss(f"seg_main_{stream}", losses.segmentation_loss(
          outputs[LOGITS["main"]], labels, ctx.num_classes))
      if self.config.lambda_seg:
        objective.add_loss(f"seg_aux_{stream}", losses.segmentation_loss(
            outputs[LOGITS["aux"]], labels, ctx.num_classes), self.config.lambda_seg)
    return objective

  def adaptation_objective(self, ctx: StepContext) -> Objective:
    """The generator's unsupervised loss on the target stream (none by default)."""
    del ctx
    return Objective()

  def generator_objective(self, ctx: StepContext) -> Objective:
    """Everything the generator minimises in one step."""
    return self.supervised_objective(ctx).merge(self.adaptation_objective(ctx))

  def discriminator_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    """Discriminator name -> its loss (none by default).

    The trainer differentiates each discriminator's loss with respect to that discriminator's
    variables only, and the generator's loss with respect to the generator's only: outputs
    shared by both losses need no detaching (the reference's detach() / requires_grad=False).
    """
    del ctx
    return {}
