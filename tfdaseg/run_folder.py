"""What a training run leaves in `model_dir`, and how evaluation and export read it back.

`model_dir/generator.json` holds the generator's Keras config, its class set, input size and
the network inference uses ("generator", or a method network of the generator's architecture
such as a mean teacher); the checkpoints (`tf.train.CheckpointManager` prefix `ckpt`) hold the
generator under the name `generator`, each method network under `network_<name>`, next to the
optimisers and the step.
"""

import os
import re

import keras
import tensorflow as tf

from tfdaseg.utils.files import atomic_write_json, read_json

GENERATOR_SPEC = "generator.json"
GENERATOR = "generator"


def checkpoint_key(network: str) -> str:
  """The name a network has in a run's checkpoints."""
  return GENERATOR if network == GENERATOR else f"network_{network}"


def write_generator_spec(model_dir: str, generator: keras.Model, class_set: str,
                         input_size: tuple[int, int],
                         inference_network: str = GENERATOR) -> None:
  """Records how to rebuild the generator of a run.

  Args:
    model_dir: The run's folder.
    generator: The generator being trained.
    class_set: Name of the class set it predicts (labels.CLASS_SETS).
    input_size: (width, height) of the target-domain input it is trained at.
    inference_network: The network (of the generator's architecture) evaluation and export
      load by default: the method's `inference_network`.
  """
  tf.io.gfile.makedirs(model_dir)
  atomic_write_json(os.path.join(model_dir, GENERATOR_SPEC), {
      "model": keras.saving.serialize_keras_object(generator),
      "class_set": str(class_set),
      "input_size": list(input_size),
      "inference_network": inference_network,
  })


def read_generator_spec(model_dir: str) -> dict:
  """Returns the spec written by `write_generator_spec`."""
  return read_json(os.path.join(model_dir, GENERATOR_SPEC))


def list_checkpoints(model_dir: str) -> list[tuple[int, str]]:
  """Returns (step, checkpoint prefix) of every checkpoint in `model_dir`, by step."""
  state = tf.train.get_checkpoint_state(model_dir)
  if state is None:
    return []
  found = []
  for path in state.all_model_checkpoint_paths:
    match = re.search(r"-(\d+)$", path)
    if match:
      found.append((int(match.group(1)), path))
  return sorted(found)


def restore_generator(model_dir: str, checkpoint: str | None = None,
                      network: str | None = None) -> tuple[keras.Model, dict]:
  """Rebuilds a run's generator and loads its weights (or those of a network of its kind).

  Args:
    model_dir: The run's folder.
    checkpoint: A checkpoint prefix; the latest one in `model_dir` when None.
    network: Which network's weights: "generator" or a method network such as "teacher";
      the run's `inference_network` when None.

  Returns:
    (generator, spec) where spec is the dict of `read_generator_spec`.

  Raises:
    FileNotFoundError: when `model_dir` has no spec or no checkpoint.
  """
  import tfdaseg.models  # noqa: F401  (registers the layers the config names)

  spec = read_generator_spec(model_dir)
  generator = keras.saving.deserialize_keras_object(spec["model"])
  path = checkpoint or tf.train.latest_checkpoint(model_dir)
  if path is None:
    raise FileNotFoundError(f"{model_dir}: no checkpoint to restore")
  restore_generator_weights(generator, path,
                            network or spec.get("inference_network", GENERATOR))
  return generator, spec


def restore_generator_weights(generator: keras.Model, checkpoint: str,
                              network: str = GENERATOR) -> None:
  """Loads the generator's weights from a training checkpoint, refusing partial ones.

  A run's checkpoint also holds discriminators and optimisers, which are not needed here; but
  every generator variable must be found, or it would silently keep its random initial value.
  Variables are matched through the checkpoint's object graph, not by key names: TF saves each
  variable once, under whichever path it meets first (often an optimiser's).

  Args:
    generator: A built generator of the run's architecture.
    checkpoint: A checkpoint prefix.
    network: The checkpointed network whose weights are loaded (see `checkpoint_key`).

  Raises:
    ValueError: naming the checkpoint, when it lacks some of the network's variables.
  """
  status = tf.train.Checkpoint(**{checkpoint_key(network): generator}).restore(checkpoint)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise ValueError(f"{checkpoint}: does not hold every weight of the {network}, the rest "
                     f"would stay random ({str(e)[:300]})") from None
  status.expect_partial()
