"""ADVENT (Vu et al., CVPR 2019): entropy minimisation (MinEnt) and entropy alignment (AdvEnt).

`--advent_mode=minent` minimises the target's normalised entropy (weights lambda_ent_target1/2);
`advent` puts the discriminators on the weighted self-information maps -p log p / log C instead
of the softmax; `both` trains with both losses at once (the paper's 45.5 "AdvEnt+MinEnt" is an
ensemble of two separately trained models, not this joint loss).
"""

import dataclasses

import tensorflow as tf

from tfdaseg.methods import losses
from tfdaseg.methods.adversarial import AdversarialConfig, AdversarialMethod
from tfdaseg.methods.base import LOGITS, TARGET, NetworkSpec, Objective, StepContext
from tfdaseg.methods.registry import METHODS
from tfdaseg.utils.config_fields import field

ADVENT_MODES = ("minent", "advent", "both")


@dataclasses.dataclass(frozen=True)
class AdventConfig(AdversarialConfig):
  """AdversarialConfig plus the entropy terms (ADVENT's defaults).

  Args:
    lambda_ent_target1: Entropy weight of the auxiliary level (ADVENT 0.0002).
    lambda_ent_target2: Entropy weight of the main level (ADVENT 0.001).
    advent_mode: "minent", "advent" or "both".
  """

  lambda_ent_target1: float = field(0.0002, "Entropy weight, aux level (ADVENT 0.0002).",
                                    minimum=0)
  lambda_ent_target2: float = field(0.001, "Entropy weight, main level (ADVENT 0.001).",
                                    minimum=0)
  advent_mode: str = field("advent", "ADVENT: minent, advent or both.", choices=ADVENT_MODES)


@METHODS.register("advent")
class Advent(AdversarialMethod):
  """MinEnt and/or AdvEnt over `config.levels`."""

  config_class = AdventConfig

  def __init__(self, config, num_classes):
    super().__init__(config, num_classes)
    self.adversarial = config.advent_mode in ("advent", "both")
    self.minimise_entropy = config.advent_mode in ("minent", "both")

  def required_outputs(self) -> set[str]:
    return super().required_outputs() | {LOGITS[level] for level in self.adversarial_levels()}

  def discriminator_networks(self) -> dict[str, NetworkSpec]:
    return super().discriminator_networks() if self.adversarial else {}

  def discriminator_input(self, ctx: StepContext, stream: str, level: str) -> tf.Tensor:
    return losses.normalised_entropy_map(ctx.upsampled_logits(stream, LOGITS[level]))

  def entropy_weight(self, level: str) -> float:
    """lambda_ent_target1 for the aux level, lambda_ent_target2 for the main level."""
    return {"aux": self.config.lambda_ent_target1, "main": self.config.lambda_ent_target2}[level]

  def alignment_objective(self, ctx: StepContext) -> Objective:
    objective = super().alignment_objective(ctx) if self.adversarial else Objective()
    if self.minimise_entropy:
      for level in self.adversarial_levels():
        objective.add_loss(f"ent_{level}",
                           losses.entropy_loss(ctx.upsampled_logits(TARGET, LOGITS[level])),
                           self.entropy_weight(level))
    return objective

  def network_objectives(self, ctx: StepContext) -> dict[str, Objective]:
    return super().network_objectives(ctx) if self.adversarial else {}
