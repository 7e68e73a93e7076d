"""Adversarial alignment of a generator output per level: what AdaptSegNet and AdvEnt share.

Per level (the reference's D1 on the aux head, D2 on the main head): the generator is pushed to
make the discriminator call its target maps "source"; the discriminator learns source (0) vs
target (1) on detached maps, each half weighted 1/2 (AdaptSegNet train_gta2cityscapes_multi.py).
Subclasses choose what the discriminator sees.

`--mic` adds MIC's masked image consistency (Hoyer et al., CVPR 2023, Table 1: on AdvSeg and
MinEnt) with an EMA teacher of its own, alpha 0.999 (MIC seg/configs/_base_/uda/advseg.py:18,
minent.py), which the adversarial losses do not use.
"""

import dataclasses

import tensorflow as tf

from tfdaseg.methods import gan_losses, mean_teacher
from tfdaseg.methods.base import (LOGITS, SOURCE, TARGET, Method, NetworkSpec, Objective,
                                  StepContext, discriminator, ema_teacher)
from tfdaseg.utils.config_fields import field

LEVELS = {"multi": ("aux", "main"), "single": ("main",)}


@dataclasses.dataclass(frozen=True)
class AdversarialConfig(mean_teacher.MaskedConsistencyConfig):
  """Hyper-parameters of output-space adversarial training (AdaptSegNet's defaults), and MIC's.

  Args:
    lambda_adv_target1: Adversarial weight of the auxiliary level (reference 0.0002).
    lambda_adv_target2: Adversarial weight of the main level (reference 0.001).
    levels: "multi" (aux and main heads) or "single" (main head only).
    gan: Adversarial loss, a key of `gan_losses.GAN_LOSSES` ("vanilla", "ls").
    learning_rate_d: The discriminators' Adam rate (reference 1e-4).
    discriminator_base_filters: Width of the discriminators' first conv (reference 64).
    alpha: Decay ceiling of MIC's teacher (used with --mic only).
  """

  lambda_adv_target1: float = field(0.0002, "Adversarial weight, aux level (reference "
                                    "0.0002).", minimum=0)
  lambda_adv_target2: float = field(0.001, "Adversarial weight, main level (reference 0.001; "
                                    "0.01 with --gan=ls).", minimum=0)
  levels: str = field("multi", "Levels: multi (aux + main heads) or single (main head).",
                      choices=tuple(LEVELS))
  gan: str = field("vanilla", "Adversarial loss: vanilla (BCE, reference) or ls (least "
                   "squares).", choices=tuple(gan_losses.GAN_LOSSES.names()))
  learning_rate_d: float = field(1e-4, "Discriminator Adam rate, poly-decayed (reference 1e-4).",
                                 above=0)
  discriminator_base_filters: int = field(64, "Discriminator width (reference ndf 64).",
                                          minimum=1)
  alpha: float = field(0.999, "Teacher EMA decay ceiling (MIC's teacher of AdvSeg/MinEnt 0.999).",
                       minimum=0, below=1)


class AdversarialMethod(Method):
  """Output-space style adversarial training over `config.levels`.

  Subclasses implement `discriminator_input` and may override `discriminator_spec`.
  """

  config_class = AdversarialConfig

  def __init__(self, config, num_classes):
    super().__init__(config, num_classes)
    self.gan = gan_losses.GAN_LOSSES.get(config.gan)

  def adversarial_levels(self) -> tuple[str, ...]:
    """Levels with a discriminator ("aux", "main")."""
    return LEVELS[self.config.levels]

  def adversarial_weight(self, level: str) -> float:
    """lambda_adv_target1 for the aux level, lambda_adv_target2 for the main level."""
    return {"aux": self.config.lambda_adv_target1, "main": self.config.lambda_adv_target2}[level]

  def discriminator_spec(self, level: str) -> NetworkSpec:
    """The reference FCDiscriminator on the level's logits-shaped maps."""
    return discriminator("output_space_discriminator", LOGITS[level],
                         self.config.learning_rate_d,
                         base_filters=self.config.discriminator_base_filters)

  def discriminator_networks(self) -> dict[str, NetworkSpec]:
    """Level -> its discriminator."""
    return {level: self.discriminator_spec(level) for level in self.adversarial_levels()}

  def networks(self) -> dict[str, NetworkSpec]:
    teacher = {mean_teacher.TEACHER: ema_teacher(self.config.alpha)} if self.config.mic else {}
    return {**self.discriminator_networks(), **teacher}

  def discriminator_input(self, ctx: StepContext, stream: str, level: str) -> tf.Tensor:
    """What the level's discriminator sees of `stream` (differentiable w.r.t. the generator)."""
    raise NotImplementedError

  def _logits(self, ctx: StepContext, stream: str, level: str) -> tf.Tensor:
    """The level's discriminator on `stream`, computed once per step.

    The target's logits serve both the generator's adversarial loss and the discriminator's
    loss: the trainer differentiates each loss only with respect to its own network's
    variables, which is the reference's requires_grad=False / detach() without a second
    forward pass. The source's maps only train the discriminator, so they are detached.
    """
    def compute():
      inputs = self.discriminator_input(ctx, stream, level)
      return ctx.discriminate(level, inputs if stream == TARGET else tf.stop_gradient(inputs))
    return ctx.memo(("discriminator_logits", stream, level), compute)

  def adaptation_objective(self, ctx: StepContext) -> Objective:
    objective = self.alignment_objective(ctx)
    if self.config.mic:
      objective = objective.merge(mean_teacher.masked_consistency_objective(ctx, self.config))
    return objective

  def alignment_objective(self, ctx: StepContext) -> Objective:
    """The generator's adversarial losses."""
    objective = Objective()
    for level in self.adversarial_levels():
      objective.add_loss(f"adv_{level}",
                         self.gan.loss(self._logits(ctx, TARGET, level), gan_losses.SOURCE_LABEL),
                         self.adversarial_weight(level))
    return objective

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    objectives = {}
    for level in self.adversarial_levels():
      objective = Objective()
      accuracies = []
      for stream, label in ((SOURCE, gan_losses.SOURCE_LABEL), (TARGET, gan_losses.TARGET_LABEL)):
        logits = self._logits(ctx, stream, level)
        objective.add_loss(f"d_{level}_{stream}", self.gan.loss(logits, label), 0.5)
        accuracies.append(self.gan.accuracy(logits, label))
      objective.add_metric(f"d_accuracy_{level}", tf.add_n(accuracies) / len(accuracies))
      objectives[level] = objective
    return objectives
