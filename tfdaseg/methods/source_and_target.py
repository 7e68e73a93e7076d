"""Source and target: joint supervised training on labelled source and a few labelled target
images (the semi-supervised setting's plain baseline, `--target_labeled_count`)."""

from tfdaseg.methods.base import LABELLED_TARGET, SOURCE, TARGET, Method, StreamSpec
from tfdaseg.methods.registry import METHODS


@METHODS.register("source_and_target")
class SourceAndTarget(Method):
  """CE(main) + lambda_seg * CE(aux) on source and on the labelled target images, no adaptation."""

  streams = {SOURCE: StreamSpec(labelled=True, domain=SOURCE),
             LABELLED_TARGET: StreamSpec(labelled=True, domain=TARGET)}
