"""ASS: Alleviating Semantic-level Shift (Wang et al., CVPRW 2020, arXiv 2004.00794).

Semi-supervised adaptation with a few labelled target images (`--target_labeled_count`), at
two levels, following the abstract; details ours (no code or full text was found):
- Global: AdaptSegNet's multi-level output-space adversarial loss between source and the
  unlabelled target stream, unchanged (`--lambda_adv_target1/2`, `--levels`, `--gan`).
- Semantic: per labelled image (source and labelled target) and per class present, the average
  of a generator feature map (`--semantic_level`: the main head's input by default) under that
  class's ground-truth mask (`class_vectors`); a semantic discriminator with one output per
  class tells source class vectors from target ones, and the generator is trained
  (`--lambda_adv_semantic`) to make the labelled target's class vectors look like source ones.
- Supervised cross-entropy on source and on the labelled target images.

Our defaults (chosen, not tuned; the demo's config uses 10x the weight, as it does for the
output-space levels): the main features, a feature cell counts for a class when more than half
of its label pixels are that class, an MLP discriminator of width 256 trained like AdaptSegNet's
(Adam 1e-4, betas 0.9/0.99, poly), and `lambda_adv_semantic` 0.001, AdaptSegNet's main-level
weight.
"""

import dataclasses

import keras
import tensorflow as tf

from tfdaseg.methods import cells, gan_losses
from tfdaseg.methods.adaptsegnet import AdaptSegNet, AdaptSegNetConfig
from tfdaseg.methods.adaptsegnet_ssl import SEMI_SUPERVISED_STREAMS
from tfdaseg.methods.base import (FEATURES, LABELLED_TARGET, SOURCE, NetworkContext, NetworkSpec,
                                  Objective, OptimizerSpec, StepContext)
from tfdaseg.methods.registry import METHODS
from tfdaseg.utils.config_fields import field

SEMANTIC = "semantic"


@dataclasses.dataclass(frozen=True)
class AssConfig(AdaptSegNetConfig):
  """AdaptSegNetConfig plus the semantic level (details ours).

  Args:
    lambda_adv_semantic: Weight of the generator's semantic adversarial loss.
    semantic_level: Whose input features are averaged: "main" or "aux" head.
    semantic_mask_ratio: A feature cell counts for a class when the class's share of its label
      pixels is above this.
    semantic_discriminator_hidden: Width of the semantic discriminator's two hidden layers.
  """

  lambda_adv_semantic: float = field(0.001, "ASS: weight of the semantic-level adversarial "
                                     "loss (details ours; AdaptSegNet's main-level 0.001).",
                                     minimum=0)
  semantic_level: str = field("main", "ASS: the head whose input features are averaged per "
                              "class (main: layer4, aux: layer3).", choices=tuple(FEATURES))
  semantic_mask_ratio: float = field(0.5, "ASS: a feature cell counts for a class when the "
                                     "class's share of its label pixels is above this.",
                                     minimum=0, below=1)
  semantic_discriminator_hidden: int = field(256, "ASS: width of the semantic discriminator's "
                                             "hidden layers.", minimum=1)


def class_vectors(features: tf.Tensor, labels: tf.Tensor, num_classes: int,
                  ratio: float) -> tuple[tf.Tensor, tf.Tensor]:
  """Per image and class, the average of `features` under the class's ground-truth mask.

  The one-hot labels are averaged over the feature cells (`cells.cell_means`: each feature cell
  gets each class's share of its label pixels; ignored pixels count for no class); a cell is in
  a class's mask when that share is above `ratio`.

  Args:
    features: float [B, h, w, F].
    labels: Integer [B, H, W] class ids; IGNORE_ID (255) and ids outside [0, C) count for none.
    num_classes: C.
    ratio: The share above which a cell counts for a class.

  Returns:
    (float32 [B, C, F] class vectors, zero for absent classes; bool [B, C] presence).
  """
  features = tf.cast(features, tf.float32)
  labels = tf.cast(labels, tf.int32)
  valid = (labels >= 0) & (labels < num_classes)
  one_hot = tf.one_hot(tf.where(valid, labels, 0), num_classes) * tf.cast(valid, tf.float32)[
      ..., None]
  share = cells.cell_means(one_hot, (tf.shape(features)[1], tf.shape(features)[2]))
  mask = tf.cast(share > ratio, tf.float32)
  counts = tf.reduce_sum(mask, axis=[1, 2])
  sums = tf.einsum("bhwc,bhwf->bcf", mask, features)
  return sums / tf.maximum(counts, 1.0)[..., None], counts > 0


def semantic_discriminator(num_channels: int, num_classes: int, hidden: int) -> keras.Model:
  """An MLP from a class vector to one source/target logit per class (details ours).

  Args:
    num_channels: F, the class vectors' length.
    num_classes: C: the logit of a vector of class c is output c.
    hidden: Width of the two hidden layers (LeakyReLU 0.2, as AdaptSegNet's discriminator).

  Returns:
    A model [N, F] -> [N, C].
  """
  return keras.Sequential([
      keras.Input((num_channels,)),
      keras.layers.Dense(hidden), keras.layers.LeakyReLU(0.2),
      keras.layers.Dense(hidden), keras.layers.LeakyReLU(0.2),
      keras.layers.Dense(num_classes)], name="semantic_discriminator")


@METHODS.register("ass")
class Ass(AdaptSegNet):
  """Global output-space + semantic-level adversarial learning with a few labelled target images."""

  config_class = AssConfig
  streams = SEMI_SUPERVISED_STREAMS

  def networks(self) -> dict[str, NetworkSpec]:
    features = FEATURES[self.config.semantic_level]
    config = self.config

    def build(ctx: NetworkContext) -> keras.Model:
      return semantic_discriminator(ctx.channels(features), ctx.num_classes,
                                    config.semantic_discriminator_hidden)

    # Trained as AdaptSegNet's discriminators (base.discriminator: Adam, betas 0.9/0.99, poly).
    semantic = NetworkSpec(build=build, optimizer=OptimizerSpec(
        "adam", config.learning_rate_d, "poly", {"beta_1": 0.9, "beta_2": 0.99}),
        reads=(features,))
    return {**super().networks(), SEMANTIC: semantic}

  def stream_class_vectors(self, ctx: StepContext, stream: str) -> tuple[tf.Tensor, tf.Tensor]:
    """`class_vectors` of a labelled stream's features (differentiable), once per step."""
    return ctx.memo(("class_vectors", stream), lambda: class_vectors(
        ctx.outputs(stream)[FEATURES[self.config.semantic_level]], ctx.batch[stream]["label"],
        ctx.num_classes, self.config.semantic_mask_ratio))

  def semantic_logits(self, ctx: StepContext, vectors: tf.Tensor) -> tf.Tensor:
    """The semantic discriminator's logit of each [B, C, F] class vector for its class: [B, C]."""
    shape = tf.shape(vectors)
    flat = ctx.discriminate(SEMANTIC, tf.reshape(vectors, [-1, shape[-1]]))
    return tf.linalg.diag_part(tf.reshape(flat, [shape[0], shape[1], shape[1]]))

  def semantic_loss(self, ctx: StepContext, stream: str, label: float,
                    detach: bool) -> tf.Tensor:
    """The GAN loss of `stream`'s present class vectors against `label`, averaged over them.

    Args:
      ctx: The step.
      stream: A labelled stream.
      label: gan_losses.SOURCE_LABEL or TARGET_LABEL.
      detach: Stop gradients to the generator (the discriminator's loss).

    Returns:
      float32 scalar (0 when no class is present).
    """
    vectors, present = self.stream_class_vectors(ctx, stream)
    if detach:
      vectors = tf.stop_gradient(vectors)
    return self.gan.masked_loss(self.semantic_logits(ctx, vectors), label, present)

  def adaptation_objective(self, ctx: StepContext) -> Objective:
    objective = super().adaptation_objective(ctx)
    objective.add_loss("adv_semantic", self.semantic_loss(
        ctx, LABELLED_TARGET, gan_losses.SOURCE_LABEL, detach=False),
        self.config.lambda_adv_semantic)
    return objective

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    objectives = super().network_objectives(ctx)
    semantic = Objective()
    for stream, label in ((SOURCE, gan_losses.SOURCE_LABEL),
                          (LABELLED_TARGET, gan_losses.TARGET_LABEL)):
      semantic.add_loss(f"d_semantic_{stream}", self.semantic_loss(ctx, stream, label,
                                                                   detach=True), 0.5)
    objectives[SEMANTIC] = semantic
    return objectives
