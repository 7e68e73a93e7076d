"""Where a trained generator comes from: a run's model_dir, a .keras file or our SavedModel export.

Every source yields a `LoadedModel`: a forward function on caffe-preprocessed images (the
generator's output dict), the class set it predicts and the input size it was trained at, so
evaluation, prediction, export and retrieval do not care which source they got.
"""

import dataclasses
import os

import keras
import tensorflow as tf

from tfdaseg.data import labels
from tfdaseg.evaluation.inference import Forward, keras_forward
from tfdaseg.registry import Registry
from tfdaseg import run_folder
from tfdaseg.utils.files import read_json

# Written next to every export (and read back from beside a .keras file): class set, input size.
EXPORT_METADATA = "export.json"

MODEL_SOURCES: Registry = Registry("model source")


@dataclasses.dataclass
class LoadedModel:
  """A generator ready for inference.

  Args:
    forward: Preprocessed float32 images [B, H, W, 3] -> the generator's output dict.
    class_set: The class set the generator predicts.
    input_size: (width, height) it was trained at, or None when unknown.
    description: Where it came from, for logs and metrics.json.
    generator: The Keras model when there is one (export needs it); None for a SavedModel.
    model_dir: The run folder for a model_dir source (to iterate its checkpoints).
    network: For a model_dir source: the checkpointed network loaded ("generator", "teacher").
  """

  forward: Forward
  class_set: labels.ClassSet
  input_size: tuple[int, int] | None
  description: str
  generator: keras.Model | None = None
  model_dir: str | None = None
  network: str = run_folder.GENERATOR

  def restore(self, checkpoint: str) -> None:
    """Loads another checkpoint of the same run into the generator.

    Raises:
      ValueError: when the model does not come from a model_dir.
    """
    if self.model_dir is None or self.generator is None:
      raise ValueError(f"{self.description}: only a --model_dir run has checkpoints to restore")
    run_folder.restore_generator_weights(self.generator, checkpoint, self.network)
    self.description = f"{self.model_dir} ({os.path.basename(checkpoint)})"


def _size(value) -> tuple[int, int] | None:
  return tuple(int(v) for v in value) if value else None


@MODEL_SOURCES.register("model_dir")
def load_model_dir(path: str, *, checkpoint: str | None = None, class_set: str | None = None,
                   network: str | None = None) -> LoadedModel:
  """A training run: generator.json plus the latest (or the given) checkpoint, loading the
  run's inference network (its method's: the generator, or e.g. an EMA teacher) or `network`."""
  generator, spec = run_folder.restore_generator(path, checkpoint, network)
  network = network or spec.get("inference_network", run_folder.GENERATOR)
  used = checkpoint or tf.train.latest_checkpoint(path)
  return LoadedModel(
      forward=keras_forward(generator),
      class_set=labels.get_class_set(class_set or spec["class_set"]),
      input_size=_size(spec.get("input_size")),
      description=f"{path} ({os.path.basename(used)}, {network})",
      generator=generator,
      model_dir=path,
      network=network,
  )


@MODEL_SOURCES.register("model")
def load_keras_file(path: str, *, checkpoint: str | None = None, class_set: str | None = None,
                    network: str | None = None) -> LoadedModel:
  """A `.keras` file; class set and input size come from an export.json beside it, if any."""
  del checkpoint, network  # a .keras file holds one network's weights
  import tfdaseg.models  # noqa: F401  (registers the layers the file names)

  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such model file")
  generator = keras.models.load_model(path, compile=False)
  sidecar = os.path.join(os.path.dirname(path), EXPORT_METADATA)
  metadata = read_json(sidecar) if tf.io.gfile.exists(sidecar) else {}
  name = class_set or metadata.get("class_set")
  if name is None:
    raise ValueError(f"{path}: no {EXPORT_METADATA} beside it; pass --model_class_set")
  return LoadedModel(
      forward=keras_forward(generator),
      class_set=labels.get_class_set(name),
      input_size=_size(metadata.get("input_size")),
      description=path,
      generator=generator,
  )


@MODEL_SOURCES.register("saved_model")
def load_saved_model(path: str, *, checkpoint: str | None = None, class_set: str | None = None,
                     network: str | None = None) -> LoadedModel:
  """A SavedModel written by `tfdaseg.export` (its `generator` and metadata endpoints)."""
  del checkpoint, network
  try:
    module = tf.saved_model.load(path)
  except (OSError, tf.errors.NotFoundError) as e:
    raise FileNotFoundError(f"{path}: not a SavedModel ({e})") from None
  if not hasattr(module, "generator"):
    raise ValueError(f"{path}: a SavedModel without the `generator` endpoint of tfdaseg.export")
  name = class_set or module.class_set().numpy().decode()
  size = module.input_size().numpy().tolist()
  return LoadedModel(
      # The closure keeps `module` alive: its functions do not own its variables.
      forward=lambda images: module.generator(images),
      class_set=labels.get_class_set(name),
      # The export stores (0, 0) for "each image at its own size".
      input_size=_size(size) if min(size) > 0 else None,
      description=path,
  )


def load_model(source: str, path: str, *, checkpoint: str | None = None,
               class_set: str | None = None, network: str | None = None) -> LoadedModel:
  """Loads a generator from a registered source.

  Args:
    source: "model_dir", "model" or "saved_model".
    path: The run folder, .keras file or SavedModel folder.
    checkpoint: For a model_dir: a checkpoint prefix instead of the latest.
    class_set: Overrides the class set the source records (needed for a bare .keras file).
    network: For a model_dir: the network to load instead of the run's inference network.

  Returns:
    The `LoadedModel`.
  """
  return MODEL_SOURCES.get(source)(path, checkpoint=checkpoint, class_set=class_set,
                                   network=network)
