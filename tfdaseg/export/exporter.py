"""Writes a trained generator in a deployable format, atomically (temp folder, then rename).

Formats (EXPORT_FORMATS): "saved_model" (serving.py's endpoints), "keras" (model.keras) and
"tflite" (model.tflite converted from the SavedModel). Every export also holds export.json:
class set, class names, palette, input size and the inference options served.
"""

import dataclasses
import os
import shutil
import tempfile

import tensorflow as tf
from absl import logging

from tfdaseg.data import labels
from tfdaseg.evaluation.inference import InferenceOptions, output_channels
from tfdaseg.evaluation.loading import EXPORT_METADATA, LoadedModel
from tfdaseg.export.serving import build_serving_archive
from tfdaseg.registry import Registry
from tfdaseg.utils.files import atomic_write_bytes, atomic_write_json

EXPORT_FORMATS: Registry = Registry("export format")

KERAS_FILE = "model.keras"
TFLITE_FILE = "model.tflite"


@dataclasses.dataclass(frozen=True)
class ExportRequest:
  """What to export.

  Args:
    model: The loaded generator (needs its Keras model).
    class_set: The classes to serve; a subset of the model's classes is cut from its logits.
    options: Input size, scales, flip and resize method of the serving function.
  """

  model: LoadedModel
  class_set: labels.ClassSet
  options: InferenceOptions

  @property
  def channels(self) -> list[int] | None:
    return output_channels(self.class_set, self.model.class_set)


@EXPORT_FORMATS.register("saved_model")
def write_saved_model(request: ExportRequest, folder: str) -> dict:
  """Writes the SavedModel of serving.py into `folder`; returns what export.json records."""
  archive = build_serving_archive(request.model.generator, request.class_set, request.options,
                                  request.channels)
  archive.write_out(folder, verbose=False)
  return {"class_set": request.class_set.name, "options": dataclasses.asdict(request.options)}


@EXPORT_FORMATS.register("keras")
def write_keras(request: ExportRequest, folder: str) -> dict:
  """Writes the generator as model.keras; loading needs `import tfdaseg` (its custom layers)."""
  if request.channels is not None:
    raise ValueError(f"--format=keras saves the whole generator: export it with its own class "
                     f"set {request.model.class_set.name!r}, not {request.class_set.name!r}")
  request.model.generator.save(os.path.join(folder, KERAS_FILE))
  return {"class_set": request.model.class_set.name, "file": KERAS_FILE}


@EXPORT_FORMATS.register("tflite")
def write_tflite(request: ExportRequest, folder: str) -> dict:
  """Converts the serving function to model.tflite (builtin ops only).

  The antialiased "bicubic" resize has no TFLite kernel, so the TFLite model always resizes
  its input bilinearly; export.json records the method used.
  """
  options = request.options
  if options.resize != "bilinear":
    logging.warning("TFLite has no %s resize kernel: the TFLite model resizes bilinearly",
                    options.resize)
    options = dataclasses.replace(options, resize="bilinear")
  with tempfile.TemporaryDirectory() as scratch:
    saved_model = os.path.join(scratch, "saved_model")
    write_saved_model(dataclasses.replace(request, options=options), saved_model)
    converter = tf.lite.TFLiteConverter.from_saved_model(
        saved_model, signature_keys=["serving_default"])
    atomic_write_bytes(os.path.join(folder, TFLITE_FILE), converter.convert())
  return {"class_set": request.class_set.name, "options": dataclasses.asdict(options),
          "file": TFLITE_FILE}


def export_model(request: ExportRequest, output: str, export_format: str = "saved_model",
                 overwrite: bool = False) -> str:
  """Exports into `output` atomically: a reader sees no export or a whole one.

  Args:
    request: The model, served classes and inference options.
    output: The folder to create.
    export_format: A name in EXPORT_FORMATS.
    overwrite: Replace an existing `output`.

  Returns:
    `output`.

  Raises:
    FileExistsError: when `output` exists and `overwrite` is False.
    ValueError: when the model has no Keras generator (a SavedModel cannot be re-exported).
  """
  writer = EXPORT_FORMATS.get(export_format)
  if request.model.generator is None:
    raise ValueError(f"{request.model.description}: export needs a Keras generator "
                     "(--model_dir or --model)")
  output = output.rstrip("/")
  if os.path.exists(output) and not overwrite:
    raise FileExistsError(f"{output}: already exists (pass --overwrite to replace it)")
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.tmp-", dir=parent)
  try:
    # The staging folder also receives a replaced export, so the new one is a subfolder.
    folder = os.path.join(staging, "export")
    os.makedirs(folder)
    recorded = writer(request, folder)
    class_set = labels.get_class_set(recorded["class_set"])
    atomic_write_json(os.path.join(folder, EXPORT_METADATA), {
        "format": export_format,
        "source": request.model.description,
        "input_size": list(request.options.input_size) if request.options.input_size else None,
        "class_names": list(class_set.names),
        "palette": [list(c) for c in class_set.palette],
        **recorded,
    })
    if os.path.exists(output):
      retired = os.path.join(staging, "previous")
      os.rename(output, retired)
    os.rename(folder, output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  logging.info("exported %s (%s) to %s", request.model.description, export_format, output)
  return output
