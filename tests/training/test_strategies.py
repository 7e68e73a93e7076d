"""Strategy registry, chief detection and the XLA switch."""

import pytest
import tensorflow as tf

from tfdaseg.training import strategies


def test_registry_builds_each_local_strategy():
  assert strategies.STRATEGIES.names() == ["auto", "mirrored", "multi_worker", "one_device"]
  assert isinstance(strategies.build_strategy("one_device"), tf.distribute.OneDeviceStrategy)
  mirrored = strategies.build_strategy("mirrored", ["CPU:0", "CPU:1"])
  assert mirrored.num_replicas_in_sync == 2
  # No GPU here: auto is one device, or mirrored over the devices it is given.
  assert strategies.build_strategy("auto").num_replicas_in_sync == 1
  assert strategies.build_strategy("auto", ["CPU:0", "CPU:1"]).num_replicas_in_sync == 2
  with pytest.raises(KeyError, match="known: auto, mirrored, multi_worker, one_device"):
    strategies.build_strategy("parameter_server")


def test_chief_is_task_zero_or_the_only_process():
  assert strategies.is_chief(tf.distribute.OneDeviceStrategy("/cpu:0"))

  class Resolver:
    def __init__(self, task_type, task_id, cluster):
      self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
      return tf.train.ClusterSpec(self._cluster)

  class Strategy:
    def __init__(self, resolver):
      self.cluster_resolver = resolver

  workers = {"worker": ["a:1", "b:2"]}
  assert strategies.is_chief(Strategy(Resolver("worker", 0, workers)))
  assert not strategies.is_chief(Strategy(Resolver("worker", 1, workers)))
  with_chief = {"chief": ["c:3"], **workers}
  assert strategies.is_chief(Strategy(Resolver("chief", 0, with_chief)))
  assert not strategies.is_chief(Strategy(Resolver("worker", 0, with_chief)))


def test_xla_is_off_on_cpu_unless_forced():
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  assert strategies.resolve_xla("auto", strategy) is False
  assert strategies.resolve_xla("on", strategy) is True
  with pytest.raises(ValueError, match="known: auto, on, off"):
    strategies.resolve_xla("maybe", strategy)
