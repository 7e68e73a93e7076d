"""Training objectives by name: `METHODS.get(name)(MethodConfig(...))`.

One module per method; importing this package registers them all.
"""

from tfdaseg.methods import adaptsegnet, advent, source_only, target_only  # noqa: F401
from tfdaseg.methods.base import (SOURCE, TARGET, DiscriminatorSpec, Method,  # noqa: F401
                                  MethodConfig, Objective, StepContext)
from tfdaseg.methods.registry import METHODS  # noqa: F401


def build(name: str, config: MethodConfig) -> Method:
  """Returns the method registered as `name`, configured by `config`."""
  return METHODS.get(name)(config)
