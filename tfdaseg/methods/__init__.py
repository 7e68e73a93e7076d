"""Training objectives by name: `tfdaseg.methods.build(name, num_classes=..., **hyper_parameters)`.

One module per method plus its import line below (the registry line): importing this package
registers them all. Methods outside the package register the same way from the
modules named in the environment variable `TFDASEG_PLUGINS` (comma-separated, importable).
"""

import importlib
import os

# The registry lines: one per method module.
from tfdaseg.methods import adaptsegnet  # noqa: F401
from tfdaseg.methods import adaptsegnet_ssl  # noqa: F401
from tfdaseg.methods import advent  # noqa: F401
from tfdaseg.methods import ass  # noqa: F401
from tfdaseg.methods import dacs  # noqa: F401
from tfdaseg.methods import feature_regression  # noqa: F401
from tfdaseg.methods import region_selection  # noqa: F401
from tfdaseg.methods import source_and_target  # noqa: F401
from tfdaseg.methods import source_only  # noqa: F401
from tfdaseg.methods import target_only  # noqa: F401
from tfdaseg.methods import ts3  # noqa: F401
from tfdaseg.methods.base import (GENERATOR, LABELLED_TARGET, SOURCE, TARGET, EmaSpec,  # noqa: F401
                                  Method,
                                  MethodConfig, NetworkContext, NetworkSpec, Objective,
                                  OptimizerSpec, StepContext, StreamSpec, discriminator,
                                  ema_teacher)
from tfdaseg.methods.registry import METHODS  # noqa: F401
from tfdaseg.utils.config_fields import check

PLUGINS_VARIABLE = "TFDASEG_PLUGINS"

for _plugin in filter(None, os.environ.get(PLUGINS_VARIABLE, "").split(",")):
  importlib.import_module(_plugin.strip())


def build(name: str, *, num_classes: int, config: MethodConfig | None = None,
          **hyper_parameters) -> Method:
  """Returns the method registered as `name`.

  Args:
    name: Registry name.
    num_classes: Classes the generator predicts.
    config: Its config; built from `hyper_parameters` (over the defaults) when None.
    **hyper_parameters: Fields of the method's `config_class`.

  Returns:
    The method.

  Raises:
    KeyError: for an unknown name.
    TypeError: for a hyper-parameter its config does not have.
    ConfigError: for a value out of its declared range.
  """
  cls = METHODS.get(name)
  if config is None:
    config = cls.config_class(**hyper_parameters)
  check(config)
  return cls(config, num_classes)
