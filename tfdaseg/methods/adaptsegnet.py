"""AdaptSegNet (Tsai et al., CVPR 2018): adversarial alignment of the softmax output or features.

`--levels=multi` puts one discriminator on each head (aux on layer3, main on layer4),
`--levels=single` only on the main head; `--adapt_space=feature` aligns the heads' input
features instead of their softmax (the paper's feature-level baseline); `--gan=ls` uses the
least-squares loss.
"""

import dataclasses

import tensorflow as tf

from tfdaseg.methods.adversarial import AdversarialConfig, AdversarialMethod
from tfdaseg.methods.base import FEATURES, LOGITS, NetworkSpec, StepContext, discriminator
from tfdaseg.methods.registry import METHODS
from tfdaseg.utils.config_fields import field

ADAPT_SPACES = ("output", "feature")


@dataclasses.dataclass(frozen=True)
class AdaptSegNetConfig(AdversarialConfig):
  """AdversarialConfig plus the space that is aligned.

  Args:
    adapt_space: "output" (softmax maps, the reference) or "feature" (the heads' input features).
  """

  adapt_space: str = field("output", "Align the softmax output (reference) or the heads' input "
                           "features.", choices=ADAPT_SPACES)


@METHODS.register("adaptsegnet")
class AdaptSegNet(AdversarialMethod):
  """Output-space (or feature-space) adversarial adaptation."""

  config_class = AdaptSegNetConfig

  def discriminator_spec(self, level: str) -> NetworkSpec:
    if self.config.adapt_space == "output":
      return super().discriminator_spec(level)
    return discriminator("feature_discriminator", FEATURES[level], self.config.learning_rate_d,
                         base_filters=self.config.discriminator_base_filters)

  def discriminator_input(self, ctx: StepContext, stream: str, level: str) -> tf.Tensor:
    if self.config.adapt_space == "output":
      # D(softmax(upsampled prediction)), as in the reference.
      return ctx.probabilities(stream, LOGITS[level])
    return ctx.outputs(stream)[FEATURES[level]]
