"""Distribution strategies by name (`--strategy`), and who is the chief.

Every strategy runs the same custom loop (`tfdaseg.training.loop`); Keras' `Model.fit` is not
used because it fails under MultiWorkerMirroredStrategy (keras-team/keras#20585).
"""

from typing import Sequence

import tensorflow as tf

from tfdaseg.registry import Registry

STRATEGIES: Registry = Registry("strategy")


def _accelerators() -> list[str]:
  return [d.name for d in tf.config.list_logical_devices("GPU")]


@STRATEGIES.register("one_device")
def one_device(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """One device: the first of `devices`, else the first GPU, else the CPU."""
  device = (list(devices or []) or _accelerators() or ["/cpu:0"])[0]
  return tf.distribute.OneDeviceStrategy(device)


@STRATEGIES.register("mirrored")
def mirrored(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """Synchronous data parallelism over `devices` (all GPUs by default) of this machine."""
  return tf.distribute.MirroredStrategy(list(devices) if devices else None)


@STRATEGIES.register("multi_worker")
def multi_worker(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """Synchronous data parallelism over the workers of TF_CONFIG (all local GPUs of each)."""
  if devices:
    raise ValueError("multi_worker takes its devices from TF_CONFIG, not from a device list")
  return tf.distribute.MultiWorkerMirroredStrategy()


@STRATEGIES.register("auto")
def auto(devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """Mirrored over several GPUs (or `devices`), one device otherwise."""
  if len(list(devices or []) or _accelerators()) > 1:
    return mirrored(devices)
  return one_device(devices)


def build_strategy(name: str, devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
  """Returns the strategy registered as `name` over `devices` (None: its default devices)."""
  return STRATEGIES.get(name)(devices)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes checkpoints and summaries (task 0, or the only process)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return task_type == "worker" and task_id == 0 and not has_chief


def uses_accelerator(strategy: tf.distribute.Strategy) -> bool:
  """Whether the strategy's replicas run on GPUs or TPUs."""
  devices = strategy.extended.worker_devices
  return any(("GPU" in d.upper() or "TPU" in d.upper()) for d in devices)


def resolve_xla(mode: str, strategy: tf.distribute.Strategy) -> bool:
  """--xla: "on", "off", or "auto" = on for GPUs/TPUs, off on CPUs (XLA was ~3x slower there).

  Raises:
    ValueError: for an unknown mode.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"unknown xla mode {mode!r}; known: auto, on, off")
  return uses_accelerator(strategy) if mode == "auto" else mode == "on"
