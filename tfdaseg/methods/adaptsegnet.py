"""AdaptSegNet (Tsai et al., CVPR 2018): adversarial alignment of the softmax output or features.

`--levels=multi` puts one discriminator on each head (aux on layer3, main on layer4),
`--levels=single` only on the main head; `--adapt_space=feature` aligns the heads' input
features instead of their softmax (the paper's feature-level baseline); `--gan=ls` uses the
least-squares loss.
"""

import tensorflow as tf

from tfdaseg.methods.adversarial import AdversarialMethod
from tfdaseg.methods.base import FEATURES, LOGITS, DiscriminatorSpec, StepContext
from tfdaseg.methods.registry import METHODS

ADAPT_SPACES = ("output", "feature")


@METHODS.register("adaptsegnet")
class AdaptSegNet(AdversarialMethod):
  """Output-space (or feature-space) adversarial adaptation."""

  def __init__(self, config):
    super().__init__(config)
    if config.adapt_space not in ADAPT_SPACES:
      raise ValueError(f"unknown adapt_space {config.adapt_space!r}; known: "
                       f"{', '.join(ADAPT_SPACES)}")

  def discriminator_spec(self, level: str) -> DiscriminatorSpec:
    if self.config.adapt_space == "output":
      return super().discriminator_spec(level)
    return DiscriminatorSpec(model="feature_discriminator", reads=FEATURES[level],
                             options={"base_filters": self.config.discriminator_base_filters})

  def discriminator_input(self, ctx: StepContext, stream: str, level: str) -> tf.Tensor:
    if self.config.adapt_space == "output":
      # D(softmax(upsampled prediction)), as in the reference.
      return ctx.probabilities(stream, LOGITS[level])
    return ctx.outputs[stream][FEATURES[level]]
