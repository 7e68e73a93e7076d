"""Source only: cross-entropy on the labelled source domain, no adaptation (the baseline)."""

from tfdaseg.methods.base import SOURCE, Method, StreamSpec
from tfdaseg.methods.registry import METHODS


@METHODS.register("source_only")
class SourceOnly(Method):
  """CE(main) + lambda_seg * CE(aux) on source; the target stream is not read."""

  streams = {SOURCE: StreamSpec(labelled=True, domain=SOURCE)}
