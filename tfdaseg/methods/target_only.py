"""Target only: supervised cross-entropy on labelled target data (the oracle, or fine-tuning)."""

from tfdaseg.methods.base import TARGET, Method, StreamSpec
from tfdaseg.methods.registry import METHODS


@METHODS.register("target_only")
class TargetOnly(Method):
  """CE(main) + lambda_seg * CE(aux) on the target stream, which must be labelled."""

  streams = {TARGET: StreamSpec(labelled=True, domain=TARGET)}
