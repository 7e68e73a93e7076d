"""TS3, transferable semi-supervised segmentation (Xiao et al., arXiv 1711.06828), strong -> weak.

The categories are split into strong ones (pixel labels) and weak ones (image-level labels only):
`--strong_fraction` of the foreground classes by id (ours: the lowest ids), or an explicit
`--strong_classes`. An image of the labelled stream is strong when every class it shows is
strong; its pixel map is used as is. A weak image keeps only its image-level labels (the classes
present: what `image/class/label` stores, derived here from its map, which is read for nothing
else).

L-Net (network "lnet"): two branches on the generator's layer4 features (detached): a
class-agnostic foreground/background branch, trained with per-pixel BCE on the strong images'
maps with their class identity removed, and an image-level classification branch, trained with
multi-label BCE on every image's labels, whose class maps are the class activation maps (CAMs).
For a weak image, the coarse label map is: background where the foreground probability is
below `--foreground_threshold`; elsewhere the present class with the highest normalised CAM
(each CAM divided by its maximum over the image), or ignore (255) where that CAM is below
`--cam_threshold`. With no strong class (`--strong_fraction=0`) the foreground branch has no
supervision, so the foreground probability is the highest normalised CAM instead.

P-Net (the generator): CE on the strong maps, plus CE on the coarse maps of weak images ramped in
over `--coarse_warmup_steps` (the L-Net starts untrained), plus an adversarial loss from a
discriminator over (image, label map) pairs that tells ground-truth maps (one-hot, strong
images) from predicted ones (softmax, every image); the generator makes its predictions on weak
images look like ground truth. Evaluation and export use the P-Net.

Details ours (not public, or replaced): the paper propagates the CAMs and the class-agnostic mask
by self-diffusion; here they are combined by the thresholds above, without diffusion. The
L-Net shares the P-Net's backbone (its branches are 1x1 convolutions on detached layer4
features) instead of being a network of its own. The discriminator is AdaptSegNet's
FCDiscriminator on [image / 128, map] at the input size; with no strong image in a batch it
sees no ground truth and only the fake half of its loss is computed.
"""

import dataclasses

import keras
import tensorflow as tf

from tfdaseg.methods.base import (SOURCE, Method, MethodConfig, NetworkSpec, Objective,
                                  OptimizerSpec, StepContext, StreamSpec,
                                  segmentation_objective)
from tfdaseg.methods.registry import METHODS
from tfdaseg.models import outputs
from tfdaseg.models.output_conventions import upsample_bilinear
from tfdaseg.utils.config_fields import ConfigError, field

LNET = "lnet"
DISCRIMINATOR = "discriminator"
IGNORE_ID = 255
# Caffe-preprocessed pixels span about +-128; the discriminator sees them at unit scale (ours).
_IMAGE_SCALE = 1.0 / 128.0


@dataclasses.dataclass(frozen=True)
class Ts3Config(MethodConfig):
  """Hyper-parameters of TS3 (details ours unless cited).

  Args:
    strong_fraction: Share of the foreground classes with pixel labels (paper: 0.5 and 0).
    strong_classes: Explicit strong class ids (overrides strong_fraction when given).
    background_class: The background's class id (VOC: 0), never weak.
    lambda_coarse: Weight of the CE on the weak images' coarse maps.
    coarse_warmup_steps: Steps over which that weight ramps linearly from 0.
    lambda_adv: Weight of the P-Net's adversarial loss.
    foreground_threshold: Foreground probability above which a weak pixel gets a class.
    cam_threshold: Normalised CAM below which a foreground pixel is ignored.
    learning_rate_lnet: Adam rate of the L-Net branches.
    learning_rate_d: Adam rate of the discriminator (AdaptSegNet's 1e-4).
    discriminator_base_filters: Width of the discriminator's first conv (AdaptSegNet's 64).
  """

  strong_fraction: float = field(0.5, "Share of the foreground classes that keep pixel labels "
                                 "(paper: 0.5 and 0); the lowest ids (ours).", minimum=0,
                                 maximum=1)
  strong_classes: tuple[int, ...] = field((), "Explicit strong class ids (over "
                                          "--strong_fraction).")
  background_class: int = field(0, "Background class id (VOC 0).", minimum=0)
  lambda_coarse: float = field(1.0, "Weight of the CE on weak images' coarse maps (ours).",
                               minimum=0)
  coarse_warmup_steps: int = field(100, "Steps over which the coarse-map weight ramps up (ours).",
                                   minimum=0)
  lambda_adv: float = field(0.01, "Weight of the P-Net's adversarial loss (ours).", minimum=0)
  foreground_threshold: float = field(0.5, "Foreground probability that makes a weak pixel an "
                                      "object (ours).", minimum=0, maximum=1)
  cam_threshold: float = field(0.2, "Normalised CAM below which an object pixel is ignored "
                               "(ours).", minimum=0, maximum=1)
  learning_rate_lnet: float = field(1e-3, "L-Net branches' Adam rate (ours).", above=0)
  learning_rate_d: float = field(1e-4, "Discriminator Adam rate (AdaptSegNet 1e-4).", above=0)
  discriminator_base_filters: int = field(64, "Discriminator width (AdaptSegNet ndf 64).",
                                          minimum=1)


def strong_class_ids(config: Ts3Config, num_classes: int) -> tuple[int, ...]:
  """The strong foreground classes: the explicit list, or the lowest-id `strong_fraction`.

  Raises:
    ConfigError: for ids outside the class set or naming the background.
  """
  foreground = [c for c in range(num_classes) if c != config.background_class]
  if config.strong_classes:
    bad = [c for c in config.strong_classes if c not in foreground]
    if bad:
      raise ConfigError(f"--strong_classes: {bad} are not foreground classes of 0.."
                        f"{num_classes - 1} (background {config.background_class})")
    return tuple(sorted(set(config.strong_classes)))
  return tuple(foreground[:round(config.strong_fraction * len(foreground))])


def _lnet(feature_channels: int, num_classes: int) -> keras.Model:
  """L-Net branches: channels 0..C-1 class maps (CAMs), channel C foreground logit."""
  features = keras.Input((None, None, feature_channels))
  maps = keras.layers.Conv2D(num_classes + 1, 1, name="lnet_branches")(features)
  return keras.Model(features, maps, name=LNET)


def _masked_mean(values: tf.Tensor, image_mask: tf.Tensor) -> tf.Tensor:
  """Mean of per-image values [B] over the images where `image_mask` [B] is 1 (0 if none)."""
  return tf.reduce_sum(values * image_mask) / tf.maximum(tf.reduce_sum(image_mask), 1.0)


@METHODS.register("ts3")
class Ts3(Method):
  """L-Net coarse maps for weak categories + P-Net CE and (image, map) adversarial refinement."""

  config_class = Ts3Config
  streams = {SOURCE: StreamSpec(labelled=True, domain=SOURCE)}

  def __init__(self, config: Ts3Config, num_classes: int):
    super().__init__(config, num_classes)
    if not 0 <= config.background_class < num_classes:
      raise ConfigError(f"--background_class={config.background_class} is outside 0.."
                        f"{num_classes - 1}")
    self.strong = strong_class_ids(config, num_classes)
    weak = [c for c in range(num_classes) if c != config.background_class
            and c not in self.strong]
    self._weak_mask = tf.constant([float(c in weak) for c in range(num_classes)])
    self._foreground_mask = tf.constant([float(c != config.background_class)
                                         for c in range(num_classes)])

  def networks(self) -> dict[str, NetworkSpec]:
    image_and_map = self.num_classes + 3
    return {
        LNET: NetworkSpec(
            build=lambda ctx: _lnet(ctx.channels(outputs.FEATURES), ctx.num_classes),
            optimizer=OptimizerSpec("adam", self.config.learning_rate_lnet, "poly"),
            reads=(outputs.FEATURES,)),
        DISCRIMINATOR: NetworkSpec(
            build=lambda ctx: ctx.build_model("output_space_discriminator",
                                              num_channels=image_and_map,
                                              base_filters=self.config.discriminator_base_filters),
            optimizer=OptimizerSpec("adam", self.config.learning_rate_d, "poly",
                                    {"beta_1": 0.9, "beta_2": 0.99})),
    }

  def required_outputs(self) -> set[str]:
    return super().required_outputs() | {outputs.FEATURES}

  # Per-batch quantities, shared by the generator's and the networks' losses.

  def _present(self, ctx: StepContext) -> tf.Tensor:
    """float [B, C]: the image-level labels (classes present in each image)."""
    def compute():
      one_hot = tf.one_hot(ctx.batch[SOURCE]["label"], self.num_classes)  # 255 -> zeros
      return tf.reduce_max(one_hot, axis=[1, 2])
    return ctx.memo(("ts3", "present"), compute)

  def _strong_images(self, ctx: StepContext) -> tf.Tensor:
    """float [B]: 1 for images that show no weak class."""
    return 1.0 - tf.reduce_max(self._present(ctx) * self._weak_mask, axis=-1)

  def _lnet_maps(self, ctx: StepContext) -> tf.Tensor:
    """float [B, H, W, C + 1]: L-Net branches on detached features, at the label size."""
    def compute():
      features = tf.stop_gradient(ctx.outputs(SOURCE)[outputs.FEATURES])
      maps = ctx.discriminate(LNET, features)
      return upsample_bilinear(maps, tf.shape(ctx.batch[SOURCE]["label"])[1:3])
    return ctx.memo(("ts3", "lnet"), compute)

  def coarse_labels(self, ctx: StepContext) -> tf.Tensor:
    """int32 [B, H, W]: the L-Net's coarse map of every image (see the module docstring)."""
    return ctx.memo(("ts3", "coarse"), lambda: self._coarse_labels(ctx))

  def coarse_map_quality(self, ctx: StepContext) -> tuple[tf.Tensor, tf.Tensor]:
    """The weak images' coarse maps against their pixel labels, which no loss reads.

    A diagnostic (logged as `coarse_agreement` and `coarse_coverage`): the strong/weak split is
    drawn on pixel-labelled data, so the hidden labels say how good the L-Net's maps are.

    Args:
      ctx: The step.

    Returns:
      (agreement: the share of coarse-labelled pixels whose class is the label's; coverage: the
      share of labelled pixels that got a coarse class), over the batch's weak images (0 if none).
    """
    labels = ctx.batch[SOURCE]["label"]
    coarse = self.coarse_labels(ctx)
    weak = (1.0 - self._strong_images(ctx))[:, None, None]
    labelled = tf.cast(labels != IGNORE_ID, tf.float32) * weak
    covered = labelled * tf.cast(coarse != IGNORE_ID, tf.float32)
    agreeing = covered * tf.cast(coarse == labels, tf.float32)
    return (tf.reduce_sum(agreeing) / tf.maximum(tf.reduce_sum(covered), 1.0),
            tf.reduce_sum(covered) / tf.maximum(tf.reduce_sum(labelled), 1.0))

  def _coarse_labels(self, ctx: StepContext) -> tf.Tensor:
    maps = tf.stop_gradient(self._lnet_maps(ctx))
    present = self._present(ctx) * self._foreground_mask
    cams = tf.nn.relu(maps[..., :self.num_classes])
    peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
    normalised = cams / tf.maximum(peak, 1e-6) * present[:, None, None, :]
    best = tf.reduce_max(normalised, axis=-1)
    foreground = tf.sigmoid(maps[..., self.num_classes]) if self.strong else best
    labels = tf.cast(tf.argmax(normalised, axis=-1), tf.int32)
    labels = tf.where(best < self.config.cam_threshold, IGNORE_ID, labels)
    return tf.where(foreground < self.config.foreground_threshold,
                    self.config.background_class, labels)

  def _discriminator_input(self, ctx: StepContext, label_map: tf.Tensor) -> tf.Tensor:
    return tf.concat([ctx.batch[SOURCE]["image"] * _IMAGE_SCALE, label_map], axis=-1)

  def generator_objective(self, ctx: StepContext) -> Objective:
    labels = ctx.batch[SOURCE]["label"]
    strong = self._strong_images(ctx)
    logits = ctx.outputs(SOURCE)
    objective = Objective()
    strong_labels = tf.where(strong[:, None, None] > 0, labels, IGNORE_ID)
    coarse = tf.where(strong[:, None, None] > 0, IGNORE_ID, self.coarse_labels(ctx))
    for name, target in (("strong", strong_labels), ("coarse", coarse)):
      objective = objective.merge(segmentation_objective(
          logits, target, self.num_classes, self.config, "seg", name,
          weight=1.0 if name == "strong" else self._coarse_weight(ctx),
          conventions=ctx.conventions))
    fake = ctx.discriminate(DISCRIMINATOR, self._discriminator_input(
        ctx, ctx.probabilities(SOURCE)))
    looks_real = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones_like(fake), logits=fake), axis=[1, 2, 3])
    objective.add_loss("adv_weak", _masked_mean(looks_real, 1.0 - strong), self.config.lambda_adv)
    objective.add_metric("strong_images", tf.reduce_mean(strong))
    agreement, coverage = self.coarse_map_quality(ctx)
    objective.add_metric("coarse_agreement", agreement)
    objective.add_metric("coarse_coverage", coverage)
    return objective

  def _coarse_weight(self, ctx: StepContext) -> tf.Tensor:
    warmup = float(max(self.config.coarse_warmup_steps, 1))
    ramp = tf.minimum(tf.cast(ctx.step, tf.float32) / warmup, 1.0)
    return ramp * self.config.lambda_coarse

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    labels = ctx.batch[SOURCE]["label"]
    strong = self._strong_images(ctx)
    maps = self._lnet_maps(ctx)
    lnet = Objective()
    class_logits = tf.reduce_mean(maps[..., :self.num_classes], axis=[1, 2])
    classification = tf.nn.sigmoid_cross_entropy_with_logits(labels=self._present(ctx),
                                                             logits=class_logits)
    foreground = tf.reduce_sum(classification * self._foreground_mask, axis=-1) / tf.reduce_sum(
        self._foreground_mask)
    lnet.add_loss("lnet_classification", tf.reduce_mean(foreground))
    if self.strong:
      valid = tf.cast(labels != IGNORE_ID, tf.float32) * strong[:, None, None]
      is_object = tf.cast(labels != self.config.background_class, tf.float32)
      bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=is_object,
                                                    logits=maps[..., self.num_classes])
      lnet.add_loss("lnet_foreground",
                    tf.reduce_sum(bce * valid) / tf.maximum(tf.reduce_sum(valid), 1.0))
    ground_truth = tf.one_hot(labels, self.num_classes)
    real = ctx.discriminate(DISCRIMINATOR, self._discriminator_input(ctx, ground_truth))
    fake = ctx.discriminate(DISCRIMINATOR, self._discriminator_input(
        ctx, tf.stop_gradient(ctx.probabilities(SOURCE))))
    bce_real = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.ones_like(real), logits=real), axis=[1, 2, 3])
    bce_fake = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.zeros_like(fake), logits=fake), axis=[1, 2, 3])
    discriminator = Objective()
    discriminator.add_loss("d_real", _masked_mean(bce_real, strong), 0.5)
    discriminator.add_loss("d_fake", tf.reduce_mean(bce_fake), 0.5)
    return {LNET: lnet, DISCRIMINATOR: discriminator}
