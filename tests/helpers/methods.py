"""The one test every registered method passes (in the spirit of keras-hub's run_task_test).

`run_method_test(name, **hyper_parameters)` builds the method on a tiny generator and checks:
losses finite over steps on one and on two replicas; gradients reach exactly the networks they
should (the generator's main head; every variable of each network with an optimiser; nothing
for networks without one, which move only by their EMA rule); checkpoint/resume identity (restoring
a checkpoint brings back every variable a step changed, and the step repeats exactly); and, when it is
another network than the generator (whose export tests/export covers), that the method's
inference network exports and serves.
"""

import functools

import numpy as np
import tensorflow as tf

from tests.helpers import training as helpers
from tfdaseg import methods
from tfdaseg.data import labels, pipeline
from tfdaseg.evaluation.inference import InferenceOptions
from tfdaseg.export.serving import build_serving_archive
from tfdaseg.models import AsppClassifier
from tfdaseg.training import loop


def method_arrays(method: methods.Method, count: int = 4) -> dict[str, dict[str, np.ndarray]]:
  """Random examples for every stream the method declares (labels where it reads them, and the
  pipeline features it asks for, computed by the features themselves)."""
  base = helpers.stream_arrays(count=count)
  features = method.stream_features()
  arrays = {}
  for index, (name, spec) in enumerate(method.streams.items()):
    stream = dict(helpers.stream_arrays(count=count, seed=index)[methods.SOURCE])
    if not spec.labelled:
      stream["label"] = base[methods.TARGET]["label"]
    stream.update(pipeline.batch_features(stream["image"], features.get(name, ())))
    arrays[name] = stream
  return arrays


def batch_of(arrays: dict, indices: list[int]) -> dict:
  """The examples at `indices` of every stream, as tensors."""
  return {stream: {k: tf.constant(v[indices]) for k, v in data.items() if k != "filename"}
          for stream, data in arrays.items()}


def _snapshot(model) -> dict[str, list[np.ndarray]]:
  return {name: [np.array(v) for v in net.weights]
          for name, net in model.all_networks().items()}


def check_gradient_routing(model, batch: dict) -> None:
  """The generator's loss reaches its main head (none of its heads for a method that does not
  train them, but the rest of it); each trained network gets a gradient for every variable;
  networks without an optimiser get none."""
  step, seed = tf.constant(0, tf.int64), tf.constant([0, 0], tf.int32)
  generator_gradients, network_gradients, _ = model._gradients(batch, 1.0, step, seed)
  head = next(layer for layer in model.generator.layers
              if isinstance(layer, AsppClassifier) and layer.name == "main_head")
  head_ids = {id(v) for v in head.trainable_variables}
  if not model.method.trains_heads:
    head_ids = {id(v) for layer in model.generator.layers if isinstance(layer, AsppClassifier)
                for v in layer.trainable_variables}
    reached = [id(v) for v, g in zip(model.generator.trainable_variables, generator_gradients)
               if g is not None]
    assert reached and not head_ids & set(reached), "the loss must reach the generator only"
  else:
    for variable, gradient in zip(model.generator.trainable_variables, generator_gradients):
      if id(variable) in head_ids:
        assert gradient is not None, f"no gradient for the generator's {variable.path}"
  trained = {name for name, spec in model.specs.items() if spec.optimizer is not None}
  assert set(network_gradients) <= trained, "a network without an optimiser got gradients"
  for name, gradients in network_gradients.items():
    missing = [v.path for v, g in zip(model.networks[name].trainable_variables, gradients)
               if g is None]
    assert not missing, f"network {name!r}: no gradient for {missing}"


def check_averages(model, before: dict) -> None:
  """After the first step (decay 0 at t = 0 for DACS's rule) or any step, an EMA network is
  decay * before + (1 - decay) * its source; other optimiser-less networks did not move."""
  after = _snapshot(model)
  for name, spec in model.specs.items():
    if spec.optimizer is not None:
      continue
    if spec.ema is None:
      for a, b in zip(after[name], before[name]):
        np.testing.assert_array_equal(a, b)
      continue
    decay = float(spec.ema.decay(tf.constant(0, tf.int64)))
    teacher, student = model.networks[name], model.all_networks()[spec.ema.of]
    index = {id(v): i for i, v in enumerate(teacher.weights)}
    for t, s in zip(teacher.trainable_variables, student.trainable_variables):
      expected = decay * before[name][index[id(t)]] + (1 - decay) * np.array(s)
      np.testing.assert_allclose(np.array(t), expected, rtol=1e-5, atol=1e-6)


def _state_variables(model) -> list:
  """Every variable of the model's networks and optimisers, and its step counter."""
  optimizers = [model.generator_optimizer, *model.network_optimizers.values()]
  return [*(v for net in model.all_networks().values() for v in net.weights),
          *(v for optimizer in optimizers for v in optimizer.variables), model.step_counter]


def check_resume_identity(model, batch: dict, directory: str) -> None:
  """The checkpoint holds all the state a step changes, and the next step depends on nothing else.

  After one step from the checkpoint, the checkpoint is restored into the same model: every
  variable the step changed (weights, BN statistics, EMA networks, optimiser slots, the step)
  must be back to its checkpointed value, and the step taken again must give the same weights.
  The same model is reused (rather than a new one, as a resumed process builds) because each
  new model costs a trace; the kill -9 resume tests of test_train_cli cover the fresh process.
  """
  checkpoint = tf.train.Checkpoint(**model.trackables())
  path = checkpoint.write(f"{directory}/ckpt")
  variables = _state_variables(model)
  saved = [np.array(v) for v in variables]
  model.train_step(batch)
  expected = helpers.weights(model)
  checkpoint.read(path).assert_existing_objects_matched()
  not_restored = [v.path if hasattr(v, "path") else v.name
                  for v, value in zip(variables, saved) if not np.array_equal(np.array(v), value)]
  assert not not_restored, f"a step changes state that the checkpoint does not hold: {not_restored}"
  model.train_step(batch)
  helpers.assert_weights_close(helpers.weights(model), expected, atol=0)


@functools.cache
def two_cpu_strategy() -> tf.distribute.MirroredStrategy:
  """A MirroredStrategy over the two logical CPUs that reduces without collective ops: the
  collective instance keys of several strategies in one test process collide (shape-mismatch
  aborts), whichever test created them."""
  return tf.distribute.MirroredStrategy(["CPU:0", "CPU:1"],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def check_two_replicas(name: str, options: dict, arrays: dict) -> None:
  """One step under MirroredStrategy on two logical CPUs, finite losses."""
  strategy = two_cpu_strategy()
  with strategy.scope():
    model = helpers.tiny_model(name, **options)
  step_fn = loop.distributed_step(model, strategy, iter_size=1)
  data = helpers.dataset_fn(arrays, 2)
  iterator = iter(strategy.distribute_datasets_from_function(lambda c: data(c, 0)))
  logs = {k: float(v) for k, v in step_fn(iterator).items()}
  assert logs and all(np.isfinite(v) for v in logs.values()), logs


def check_export(model, directory: str) -> None:
  """The method's inference network exports and serves uint8 images at their size."""
  network = model.all_networks()[model.method.inference_network]
  classes = labels.get_class_set("19")
  archive = build_serving_archive(network, classes, InferenceOptions(input_size=(32, 32)),
                                  channels=None)
  archive.write_out(f"{directory}/saved_model", verbose=False)
  served = tf.saved_model.load(f"{directory}/saved_model").signatures["serving_default"](
      images=tf.zeros([1, 40, 36, 3], tf.uint8))
  assert tuple(served["labels"].shape) == (1, 40, 36)


def run_method_test(name: str, directory: str, **options) -> None:
  """Every check of the module docstring for the registered method `name`.

  Args:
    name: Registry name.
    directory: A scratch folder (checkpoints).
    **options: The method's hyper-parameters.
  """
  model = helpers.tiny_model(name, **options)
  arrays = method_arrays(model.method)
  batch = batch_of(arrays, [0, 1])
  check_gradient_routing(model, batch)
  before = _snapshot(model)
  logs = model.train_step(batch)
  assert all(np.isfinite(float(v)) for v in logs.values()), logs
  assert any(k.startswith("loss/") for k in logs)
  check_averages(model, before)
  assert any(np.abs(a - b).max() > 0 for a, b in zip(
      [np.array(v) for v in model.generator.weights], before["generator"]))
  check_resume_identity(model, batch_of(arrays, [2, 3]), directory)
  check_two_replicas(name, options, arrays)
  # The generator's export is tests/export's; a method only changes which network is exported.
  if model.method.inference_network != methods.GENERATOR:
    check_export(model, directory)
