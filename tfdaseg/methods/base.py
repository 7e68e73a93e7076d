"""The interface between a training objective (a method) and the trainer.

A method declares, as data, what it needs: its hyper-parameters (`config_class`, a dataclass of
`tfdaseg.utils.config_fields.field`s: the trainer derives a flag from each), the streams it reads
(`streams`: name -> `StreamSpec`), and the networks it adds (`networks()`: name -> `NetworkSpec`:
a discriminator or weighting network trained by its own loss, an EMA teacher, a frozen copy).
Then it computes losses from a `StepContext`, which runs any network on any images inside the
step (memoised) and gives the step number and a per-step stateless seed.

The trainer (`tfdaseg.training.model`) owns the update order, gradient accumulation, precision,
distribution, XLA, the optimisers and the EMA updates. Every loss is a float32 scalar averaged over
the replica's batch; the trainer scales it for replicas and sub-batches.
"""

import dataclasses
import zlib
from typing import Any, Callable, ClassVar, Mapping

import keras
import tensorflow as tf

from tfdaseg.methods import losses
from tfdaseg.models import outputs as keys
from tfdaseg.models.dropout import without_training_randomness
from tfdaseg.models.output_conventions import (OutputConventions, output_conventions,
                                               upsample_bilinear)
from tfdaseg.utils.config_fields import field

SOURCE = "source"
TARGET = "target"
# The few labelled target images of the semi-supervised setting (tfdaseg.training.labelled_target).
LABELLED_TARGET = "labelled_target"
GENERATOR = "generator"

# Level name -> generator output key (kept here for the methods' brevity).
LOGITS = keys.LEVEL_LOGITS
FEATURES = keys.LEVEL_FEATURES


@dataclasses.dataclass(frozen=True)
class MethodConfig:
  """Hyper-parameters every method has; a method's own config subclasses it.

  Args:
    lambda_seg: Weight of the auxiliary head's cross-entropy (reference 0.1).
    detail_loss_weight: HRDA's detail loss weight: CE(detail crop) weighs this, CE(fused)
      1 - this; read only for generators with a detail branch (--hrda).
  """

  lambda_seg: float = field(0.1, "Weight of the aux head's cross-entropy (reference 0.1; 0 for "
                            "single-level).", minimum=0)
  # HRDA hrda_head.py `losses` (loss_seg *= 1 - hr_loss_weight) and configs/hrda/
  # gtaHR2csHR_hrda.py (hr_loss_weight=0.1).
  detail_loss_weight: float = field(0.1, "With --hrda: weight of the CE of the detail crop's "
                                    "own prediction; the fused prediction's CE weighs 1 - this "
                                    "(HRDA 0.1).", minimum=0, below=1)


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """A data stream a method reads every step.

  Args:
    labelled: Whether its labels are read (the split must have them).
    domain: "source" or "target": the stream's defaults (class set, input size) are the
      domain's unless its own flags say otherwise.
    aligned_with: Another stream of the method whose split is content-aligned with this one's
      (the same records in the same order, e.g. a copy by tools/make_transformed_dataset.py):
      the two are read in lockstep, so batch i of both holds the same images.
  """

  labelled: bool
  domain: str
  aligned_with: str | None = None


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """How a method network is trained (the trainer builds the optimiser).

  Args:
    name: Optimiser registry name in `tfdaseg.training.optimizers` ("adam", "sgd").
    learning_rate: Base rate.
    schedule: "poly" (the run's num_steps and power, as the reference) or "constant".
    options: Further optimiser arguments (beta_2, momentum, ...).
  """

  name: str
  learning_rate: float
  schedule: str = "poly"
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class NetworkContext:
  """What a network builder can read.

  Args:
    generator: The (built) generator.
    num_classes: Classes it predicts.
    build_model: (registry name, **options) -> network (`tfdaseg.models.build`).
  """

  generator: keras.Model
  num_classes: int
  build_model: Callable[..., keras.Model]

  def channels(self, output_key: str) -> int:
    """The channel count of one of the generator's outputs."""
    return int(self.generator.output[output_key].shape[-1])

  def generator_copy(self, outputs: tuple[str, ...] | None = None) -> keras.Model:
    """A new network of the generator's architecture holding the generator's current weights.

    Args:
      outputs: Keep only these outputs (a dict of them): the copy then computes only what they
        need (a feature reference skips the classifier, and HRDA's detail branch).

    Returns:
      The copy.
    """
    copy = keras.models.clone_model(self.generator)
    copy.set_weights(self.generator.get_weights())
    if outputs is None:
      return copy
    return keras.Model(copy.input, {key: copy.output[key] for key in outputs}, name=copy.name)


@dataclasses.dataclass(frozen=True)
class EmaSpec:
  """An exponential moving average of another network, updated after every step.

  teacher = decay * teacher + (1 - decay) * student over the trainable variables of both
  (DACS/DAFormer average `parameters()`, not buffers: BatchNorm statistics and other
  non-trainable variables keep what they were copied with, unless `include_non_trainable`).

  Args:
    of: The averaged network ("generator").
    decay: step (int64 scalar, the number of updates done, >= 1) -> float32 decay.
    include_non_trainable: Also average non-trainable variables (BN statistics).
  """

  of: str
  decay: Callable[[tf.Tensor], tf.Tensor]
  include_non_trainable: bool = False


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
  """A network a method adds.

  Args:
    build: NetworkContext -> the network (called inside the strategy's scope).
    optimizer: How its own loss trains it; None for networks without an optimiser (a teacher,
      a frozen copy).
    ema: When set, the network is an EMA of another one, updated after every step.
    checkpointed: Saved in the run's checkpoints (and restored on resume).
    exportable: Evaluation and export may use it instead of the generator (an EMA teacher
      of the generator's architecture).
    reads: Generator outputs it needs (checked against the generator when building).
  """

  build: Callable[[NetworkContext], keras.Model]
  optimizer: OptimizerSpec | None = None
  ema: EmaSpec | None = None
  checkpointed: bool = True
  exportable: bool = False
  reads: tuple[str, ...] = ()


def discriminator(model: str, reads: str, learning_rate: float,
                  **options: Any) -> NetworkSpec:
  """A registered discriminator on the channels of generator output `reads`, trained by Adam
  with betas (0.9, 0.99) under the poly schedule (AdaptSegNet train_gta2cityscapes_multi.py).

  Args:
    model: Registry name in `tfdaseg.models` ("output_space_discriminator", ...).
    reads: The generator output whose channel count its input has.
    learning_rate: Adam's base rate (reference 1e-4).
    **options: Further build options (base_filters, ...).

  Returns:
    The spec.
  """
  return NetworkSpec(
      build=lambda ctx: ctx.build_model(model, num_channels=ctx.channels(reads), **options),
      optimizer=OptimizerSpec("adam", learning_rate, "poly", {"beta_1": 0.9, "beta_2": 0.99}),
      reads=(reads,))


def ema_teacher(alpha: float, of: str = GENERATOR) -> NetworkSpec:
  """A mean teacher of the generator: decay min(1 - 1/(t + 1), alpha) at update t (DACS
  trainUDA.py update_ema_variables, DAFormer dacs.py _update_ema), exportable. Its dropout is
  off even in training mode (DAFormer dacs.py sets the EMA model's `_DropoutNd` and `DropPath`
  modules to eval before its pseudo-labels; DeepLab-v2 has none).

  Args:
    alpha: The decay's ceiling (DACS 0.99, DAFormer 0.999).
    of: The averaged network.

  Returns:
    The spec.
  """
  def decay(step: tf.Tensor) -> tf.Tensor:
    step = tf.cast(step, tf.float32)
    return tf.minimum(1.0 - 1.0 / (step + 1.0), alpha)

  return NetworkSpec(build=lambda ctx: without_training_randomness(ctx.generator_copy()),
                     ema=EmaSpec(of=of, decay=decay), exportable=True)


Weight = float | tf.Tensor


class Objective:
  """Named loss terms (weight, unweighted float32 scalar) plus metrics that are only logged.

  Weights are floats or float32 scalar tensors (ramps computed from `StepContext.step`).
  """

  def __init__(self):
    self.losses: dict[str, tuple[Weight, tf.Tensor]] = {}
    self.metrics: dict[str, tf.Tensor] = {}

  def add_loss(self, name: str, value: tf.Tensor, weight: Weight = 1.0) -> None:
    """Adds `weight * value` to the total under `name` (names must be unique)."""
    if name in self.losses:
      raise ValueError(f"loss {name!r} added twice")
    if not isinstance(weight, tf.Tensor):
      weight = float(weight)
    self.losses[name] = (weight, tf.cast(value, tf.float32))

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
    return tf.add_n([tf.constant(0.0)] + [tf.cast(w, tf.float32) * v
                                          for w, v in self.losses.values()])


def _crop_to_box(maps: tf.Tensor, box: tf.Tensor, stride: tf.Tensor) -> tf.Tensor:
  """maps[:, y1/s:y2/s, x1/s:x2/s] for box (y1, y2, x1, x2) in pixels and an int stride s."""
  begin = tf.concat([[0], tf.stack([box[0], box[2]]) // stride], axis=0)
  extent = tf.stack([box[1] - box[0], box[3] - box[2]]) // stride
  rest = tf.fill([tf.rank(maps) - 3], -1)
  return tf.slice(maps, tf.concat([begin, tf.zeros_like(rest)], axis=0),
                  tf.concat([[-1], extent, rest], axis=0))


def segmentation_objective(outputs: Mapping[str, tf.Tensor], labels: tf.Tensor,
                           num_classes: int, config: MethodConfig, prefix: str,
                           suffix: str = "", pixel_weights: tf.Tensor | None = None,
                           average_over_all_pixels: bool = False,
                           weight: Weight = 1.0, *,
                           conventions: OutputConventions) -> Objective:
  """The generator's cross-entropy on one labelled batch, over all its heads.

  CE(logits), + lambda_seg * CE(aux_logits) when lambda_seg (the reference's multi-level loss),
  and for HRDA generators (outputs "detail_logits", "detail_box"): CE(fused) weighs
  1 - detail_loss_weight and the detail windows' logits, cut to the detail box, are trained on
  the labels (and weights) cut to the same box with detail_loss_weight (HRDA hrda_head.py
  `losses`, `crop(seg_label, hr_crop_box)`).

  Args:
    outputs: The generator's outputs on the batch's images.
    labels: Integer [B, H, W] (255 ignored), the images' size.
    num_classes: C.
    config: The method's settings (lambda_seg, detail_loss_weight).
    prefix: Loss-name prefix: terms are "{prefix}_main", "_aux", "_detail" (+ "_{suffix}").
    suffix: Loss-name suffix (the stream), or "".
    pixel_weights: Optional float32 [B, H, W].
    average_over_all_pixels: `losses.segmentation_loss`'s averaging (always on where the
      generator's `conventions` average over all pixels).
    weight: Weight of the whole objective.
    conventions: The generator's resize and averaging conventions (`StepContext.conventions`).

  Returns:
    The objective.
  """
  def add(head: str, logits: tf.Tensor, head_labels: tf.Tensor,
          head_weights: tf.Tensor | None, head_weight: Weight) -> None:
    objective.add_loss("_".join(filter(None, (prefix, head, suffix))), losses.segmentation_loss(
        logits, head_labels, num_classes, pixel_weights=head_weights,
        average_over_all_pixels=average_over_all_pixels or conventions.average_over_all_pixels,
        align_corners=conventions.align_corners), head_weight * weight)

  objective = Objective()
  detail = keys.DETAIL_LOGITS in outputs
  add("main", outputs[keys.LOGITS], labels, pixel_weights,
      1.0 - config.detail_loss_weight if detail else 1.0)
  if config.lambda_seg:
    add("aux", outputs[keys.AUX_LOGITS], labels, pixel_weights, config.lambda_seg)
  if detail and config.detail_loss_weight:
    box = tf.cast(outputs[keys.DETAIL_BOX][0], tf.int32)
    stride = tf.shape(labels)[1] // tf.shape(outputs[keys.DETAIL_LOGITS])[1]
    add("detail", _crop_to_box(outputs[keys.DETAIL_LOGITS], box, stride),
        _crop_to_box(labels, box, 1),
        None if pixel_weights is None else _crop_to_box(pixel_weights, box, 1),
        config.detail_loss_weight)
  return objective


class StepContext:
  """What a method sees of one (sub-)batch on one replica.

  Args:
    batch: Stream name -> the pipeline's batch dict ("image", "label", ...).
    networks: Name -> network: "generator" and the method's networks.
    num_classes: Classes the generator predicts.
    step: int64 scalar, the global step being computed (0 for the first; restored on resume).
    seed: int32 [2] stateless seed of this step, sub-batch and replica.
  """

  def __init__(self, batch: Mapping[str, Mapping[str, tf.Tensor]],
               networks: Mapping[str, keras.Model], num_classes: int,
               step: tf.Tensor, seed: tf.Tensor):
    self.batch = batch
    self.networks = networks
    self.num_classes = num_classes
    self.step = step
    self.seed = seed
    self._memo: dict[tuple, Any] = {}

  @property
  def conventions(self) -> OutputConventions:
    """The generator family's resize and CE-averaging conventions."""
    return output_conventions(self.networks[GENERATOR])

  def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
    """Returns `compute()`, computed once per step for `key` (shared by several losses)."""
    if key not in self._memo:
      self._memo[key] = compute()
    return self._memo[key]

  def seed_for(self, purpose: str) -> tf.Tensor:
    """An independent stateless seed for one use ("classmix", "jitter", ...) in this step."""
    return tf.random.experimental.stateless_fold_in(
        self.seed, zlib.crc32(purpose.encode()) & 0x7FFFFFFF)

  def forward(self, network: str, images: tf.Tensor, training: bool = True,
              key: str | None = None) -> dict[str, tf.Tensor]:
    """Runs `network` on `images` (built inside the step or a stream's), once per step.

    Args:
      network: "generator" or one of the method's networks.
      images: Caffe-preprocessed [B, H, W, 3].
      training: Training mode (dropout, batch statistics); teachers run with False.
      key: Memo key of the images; by default the tensor itself.

    Returns:
      The network's outputs cast to float32 (a dict for segmentation networks).
    """
    def compute():
      outputs = self.networks[network](images, training=training)
      return tf.nest.map_structure(lambda t: tf.cast(t, tf.float32), outputs)
    return self.memo(("forward", network, key or images.ref(), training), compute)

  def outputs(self, stream: str, network: str = GENERATOR,
              training: bool = True) -> dict[str, tf.Tensor]:
    """A network's outputs on a stream's images (the generator in training mode by default)."""
    return self.forward(network, self.batch[stream]["image"], training, key=f"stream:{stream}")

  def upsampled_logits(self, stream: str, key: str = keys.LOGITS) -> tf.Tensor:
    """The generator's `key` output on `stream`, upsampled to the stream's image size.

    The references upsample every prediction to the input size (bilinear, aligned corners in
    the DeepLab-v2 ones: `self.conventions`) before their losses and discriminators.
    """
    def compute():
      size = tf.shape(self.batch[stream]["image"])[1:3]
      return upsample_bilinear(self.outputs(stream)[key], size, self.conventions.align_corners)
    return self.memo(("upsampled", stream, key), compute)

  def probabilities(self, stream: str, key: str = keys.LOGITS) -> tf.Tensor:
    """Softmax of `upsampled_logits(stream, key)`."""
    return self.memo(("softmax", stream, key),
                     lambda: tf.nn.softmax(self.upsampled_logits(stream, key), axis=-1))

  def discriminate(self, name: str, inputs: tf.Tensor) -> tf.Tensor:
    """Runs network `name` (training mode) and returns float32 logits."""
    return tf.cast(self.networks[name](inputs, training=True), tf.float32)


class Method:
  """A training objective. Subclasses register with `METHODS.register(name)`.

  Class attributes:
    config_class: Its hyper-parameters (flags derived from the fields).
    streams: Stream name -> spec of the data it reads every step.
    inference_network: The network evaluation and export use by default ("generator", or an
      exportable network of `networks()` such as a mean teacher).
    trains_heads: Whether the generator's loss reaches its heads; False for a loss that stops
      at their input (feature regression keeps its teacher's classifier).
    starts_from_trained_generator: Training needs --restore_from (feature regression's teacher
      is the restored generator).
    same_size_streams: Streams whose training images must have one size (mixed pixel by pixel,
      as DACS's ClassMix); the trainer checks it before training.
  """

  config_class: ClassVar[type] = MethodConfig
  streams: ClassVar[Mapping[str, StreamSpec]] = {
      SOURCE: StreamSpec(labelled=True, domain=SOURCE),
      TARGET: StreamSpec(labelled=False, domain=TARGET)}
  inference_network: ClassVar[str] = GENERATOR
  trains_heads: ClassVar[bool] = True
  starts_from_trained_generator: ClassVar[bool] = False
  same_size_streams: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config: MethodConfig, num_classes: int):
    if not isinstance(config, self.config_class):
      raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, not "
                      f"{type(config).__name__}")
    self.config = config
    self.num_classes = num_classes

  @property
  def labelled_streams(self) -> tuple[str, ...]:
    """Streams trained with the supervised loss."""
    return tuple(name for name, spec in self.streams.items() if spec.labelled)

  def networks(self) -> dict[str, NetworkSpec]:
    """Name -> spec of the networks the method adds (none by default)."""
    return {}

  def stream_features(self) -> dict[str, tuple]:
    """Stream name -> `tfdaseg.data.pipeline.ExampleFeature`s its examples carry, computed in
    the input pipeline after augmentation (none by default)."""
    return {}

  def required_outputs(self) -> set[str]:
    """Generator output keys this method reads (checked against the generator at build)."""
    needed = {key for spec in self.networks().values() for key in spec.reads} | {keys.LOGITS}
    if self.config.lambda_seg:
      needed.add(keys.AUX_LOGITS)
    return needed

  def supervised_objective(self, ctx: StepContext,
                           pixel_weights: Mapping[str, tf.Tensor] | None = None) -> Objective:
    """Cross-entropy on every labelled stream: CE(main) + lambda_seg * CE(aux) (and HRDA's
    detail term: `segmentation_objective`).

    Logits are upsampled to the label size inside the loss. The aux term is skipped when
    lambda_seg is 0 (the reference's single-level setting).

    Args:
      ctx: The step.
      pixel_weights: Stream -> float32 [B, H, W] weights of its pixels (default 1).

    Returns:
      The objective.
    """
    objective = Objective()
    for stream in self.labelled_streams:
      objective = objective.merge(segmentation_objective(
          ctx.outputs(stream), ctx.batch[stream]["label"], ctx.num_classes, self.config, "seg",
          stream, pixel_weights=(pixel_weights or {}).get(stream),
          conventions=ctx.conventions))
    return objective

  def adaptation_objective(self, ctx: StepContext) -> Objective:
    """The generator's unsupervised loss (none by default)."""
    del ctx
    return Objective()

  def generator_objective(self, ctx: StepContext) -> Objective:
    """Everything the generator minimises in one step."""
    return self.supervised_objective(ctx).merge(self.adaptation_objective(ctx))

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    """Network name -> its loss, for the networks with an optimiser (none by default).

    The trainer differentiates each network's loss with respect to that network's variables
    only, and the generator's loss with respect to the generator's only: outputs shared by
    both losses need no detaching (the reference's detach() / requires_grad=False).
    """
    del ctx
    return {}
