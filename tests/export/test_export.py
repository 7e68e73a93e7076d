"""Export: the SavedModel serves in a process without tfdaseg; .keras and TFLite round-trip."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import evaluation as helpers
from tests.helpers import models
from tfdaseg.data import labels
from tfdaseg.evaluation import inference, loading
from tfdaseg.export import cli, exporter
from tfdaseg import run_folder

# Runs in a fresh interpreter outside the repository: only TensorFlow, never tfdaseg.
_SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
module = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = module.signatures["serving_default"](images=tf.constant(images))
np.savez(sys.argv[3], labels=out["labels"].numpy(), probabilities=out["probabilities"].numpy())
print(json.dumps({
    "class_names": [n.decode() for n in module.class_names().numpy()],
    "palette": module.palette().numpy().tolist(),
    "input_size": module.input_size().numpy().tolist(),
    "tfdaseg_imported": any(m.split(".")[0] == "tfdaseg" for m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp("run"))
  helpers.make_model_dir(model_dir, steps=(3,))
  return loading.load_model("model_dir", model_dir)


@pytest.fixture(scope="module")
def saved_model(model, tmp_path_factory):
  """The default SavedModel export (with flip test-time augmentation), shared by tests."""
  return _export(model, tmp_path_factory.mktemp("export") / "saved_model", flip=True)


def _export(model, output, export_format="saved_model", class_set=None, **options):
  options = inference.InferenceOptions(input_size=model.input_size, **options)
  request = exporter.ExportRequest(model, class_set or model.class_set, options)
  return exporter.export_model(request, str(output), export_format)


def _in_process(model, images, **options):
  options = inference.InferenceOptions(input_size=model.input_size, **options)
  return inference.segment_images(model.forward, tf.constant(images), options)


def test_saved_model_serves_without_tfdaseg(model, saved_model, tmp_path):
  # A size unlike the model's input size: the export resizes in and out itself.
  images = helpers.random_images(2, height=40, width=72)
  np.save(tmp_path / "images.npy", images)
  result = subprocess.run(
      [sys.executable, "-c", _SERVE_SCRIPT, saved_model, str(tmp_path / "images.npy"),
       str(tmp_path / "served.npz")],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr[-3000:]
  served = json.loads(result.stdout.strip().splitlines()[-1])

  assert not served["tfdaseg_imported"]
  assert served["class_names"] == list(labels.CITYSCAPES_CLASSES)
  assert served["palette"] == [list(c) for c in labels.CITYSCAPES_PALETTE]
  assert served["input_size"] == list(helpers.INPUT_SIZE)
  outputs = np.load(tmp_path / "served.npz")
  assert outputs["labels"].dtype == np.int32 and outputs["labels"].shape == (2, 40, 72)
  assert outputs["probabilities"].shape == (2, 40, 72, helpers.NUM_CLASSES)
  np.testing.assert_array_equal(outputs["labels"], outputs["probabilities"].argmax(-1))
  # The export computes what evaluation and prediction compute in process (up to graph-level
  # float reassociation).
  expected = _in_process(model, images, flip=True)["probabilities"].numpy()
  np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-3)


def test_saved_model_reloads_as_a_model_source(model, saved_model):
  reloaded = loading.load_model("saved_model", saved_model)
  assert reloaded.class_set.name == "19" and reloaded.input_size == helpers.INPUT_SIZE
  images = tf.constant(helpers.random_images(1), tf.float32) - 100.0
  models.assert_outputs_close(reloaded.forward(images)["logits"].numpy(),
                              model.forward(images)["logits"].numpy(), rtol=1e-4)
  metadata = json.loads(open(os.path.join(saved_model, loading.EXPORT_METADATA)).read())
  assert metadata["options"]["flip"] is True and metadata["format"] == "saved_model"


def test_export_of_a_class_subset_cuts_the_logits(model, tmp_path):
  sixteen = labels.get_class_set("16")
  output = _export(model, tmp_path / "export", class_set=sixteen)
  module = tf.saved_model.load(output)
  images = helpers.random_images(1)
  served = module.signatures["serving_default"](images=tf.constant(images))
  assert served["probabilities"].shape[-1] == sixteen.num_classes
  channels = labels.subset_indices(sixteen, model.class_set)
  expected = inference.segment_images(
      model.forward, tf.constant(images),
      inference.InferenceOptions(input_size=model.input_size), channels=channels)
  np.testing.assert_allclose(served["probabilities"], expected["probabilities"], atol=1e-3)


def test_keras_export_round_trips(model, tmp_path):
  output = _export(model, tmp_path / "export", "keras")
  reloaded = loading.load_model("model", os.path.join(output, exporter.KERAS_FILE))
  assert reloaded.class_set.name == "19" and reloaded.input_size == helpers.INPUT_SIZE
  images = tf.constant(helpers.random_images(1), tf.float32)
  models.assert_outputs_close(reloaded.forward(images)["logits"].numpy(),
                              model.forward(images)["logits"].numpy(), rtol=1e-4)


def test_tflite_export_runs_like_the_saved_model(model, tmp_path):
  output = _export(model, tmp_path / "export", "tflite")
  interpreter = tf.lite.Interpreter(model_path=os.path.join(output, exporter.TFLITE_FILE))
  runner = interpreter.get_signature_runner("serving_default")
  images = helpers.random_images(1, height=40, width=72)
  served = runner(images=images)
  # TFLite has no antialiased bicubic resize: the export resizes bilinearly.
  expected = _in_process(model, images, resize="bilinear")["labels"].numpy()
  assert served["labels"].shape == (1, 40, 72)
  # Float kernels differ a little between TFLite and TF: allow rare argmax ties to flip.
  assert np.mean(served["labels"] == expected) > 0.99


def test_export_is_atomic_and_refuses_to_overwrite(model, tmp_path):
  output = tmp_path / "export"
  _export(model, output, "keras")
  with pytest.raises(FileExistsError, match="already exists"):
    _export(model, output, "keras")
  assert sorted(os.listdir(tmp_path)) == ["export"]


def test_cli_exports_and_overwrites(model, tmp_path):
  output = tmp_path / "export"
  output.mkdir()
  (output / "stale.txt").write_text("old")
  helpers.run_cli(cli.main, ["tfdaseg-export", f"--model_dir={model.model_dir}",
                            f"--output={output}", "--overwrite", "--input_size=32,16"])
  assert not (output / "stale.txt").exists()
  assert tf.saved_model.load(str(output)).input_size().numpy().tolist() == [32, 16]
  assert sorted(os.listdir(tmp_path)) == ["export"]


def test_checkpoint_lacking_generator_variables_is_refused(tmp_path):
  generator = helpers.tiny_generator()
  # A checkpoint of only the backbone's first layer: restoring it would leave the rest random.
  partial = tf.train.Checkpoint(generator=tf.train.Checkpoint(
      _operations={"1": generator.layers[1]})).save(str(tmp_path / "ckpt"))
  with pytest.raises(ValueError, match="does not hold every weight of the generator"):
    run_folder.restore_generator_weights(generator, partial)
