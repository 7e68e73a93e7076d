"""AdaptSegNet with a few labelled target images: the semi-supervised baseline of later work.

DDM (CVPR 2021) compares ASS against AdaptSegNet plus cross-entropy on the labelled target
images (REFERENCE.md "Semi-supervised facts"): AdaptSegNet's output-space adversarial training
between source and the unlabelled target stream, unchanged, plus the supervised loss on the
`labelled_target` stream (`--target_labeled_count`).
"""

from tfdaseg.methods.adaptsegnet import AdaptSegNet
from tfdaseg.methods.base import LABELLED_TARGET, SOURCE, TARGET, StreamSpec
from tfdaseg.methods.registry import METHODS

SEMI_SUPERVISED_STREAMS = {SOURCE: StreamSpec(labelled=True, domain=SOURCE),
                           LABELLED_TARGET: StreamSpec(labelled=True, domain=TARGET),
                           TARGET: StreamSpec(labelled=False, domain=TARGET)}


@METHODS.register("adaptsegnet_ssl")
class AdaptSegNetSSL(AdaptSegNet):
  """AdaptSegNet (source vs unlabelled target) + CE on source and the labelled target images."""

  streams = SEMI_SUPERVISED_STREAMS
