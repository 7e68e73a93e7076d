"""Converts a PyTorch checkpoint of a reference model (AdaptSegNet / ADVENT) to a `.keras` file.

PyTorch is not needed: the `.pth` is read by tfdaseg's restricted unpickler. The output is a
complete model, loadable with `keras.models.load_model(path)` after `import tfdaseg` and by
`python -m tfdaseg.train --restore_from=FILE`: what the checkpoint lacks keeps its fresh
initialisation, and the report names every skipped tensor and every variable left at init.
Any failure is one line on stderr, `import_torch_checkpoint: error: <file>: <problem>`, and exit
status 1.

Examples:
  # AdaptSegNet's released GTA5 -> Cityscapes multi-level model.
  python -m tools.import_torch_checkpoint --checkpoint=GTA2Cityscapes_multi-ed35151c.pth \
      --architecture=deeplab_v2_resnet101_multi --num_classes=19 --aspp_compat=adaptsegnet \
      --output=gta2cityscapes_multi.keras
  # The DeepLab-v2 initialisation (AdaptSegNet's DeepLab_resnet_pretrained_init-f81d91e8.pth or
  # ADVENT's DeepLab_resnet_pretrained_imagenet.pth): backbone only, both heads fresh.
  python -m tools.import_torch_checkpoint \
      --checkpoint=DeepLab_resnet_pretrained_init-f81d91e8.pth --layout=deeplab_resnet_init \
      --architecture=deeplab_v2_resnet101_multi --num_classes=19 --output=deeplab_init_multi.keras
  # DAFormer's start: the ImageNet MiT-B5 encoder (SegFormer's mit_b5.pth, or Hugging Face's
  # nvidia/mit-b5 pytorch_model.bin / model.safetensors), the head fresh.
  python -m tools.import_torch_checkpoint --checkpoint=mit_b5.pth --layout=mit_imagenet \
      --architecture=daformer_mit_b5 --num_classes=19 --output=daformer_mit_b5_imagenet.keras
"""

import inspect
import json
import os
import sys
from typing import NoReturn

from absl import app, flags, logging

from tfdaseg.models.registry import MODELS
from tfdaseg.models.torch_checkpoint import CheckpointError
from tfdaseg.models.torch_import import LAYOUTS, import_torch_checkpoint

FLAGS = flags.FLAGS
PROGRAM = "import_torch_checkpoint"
# Models whose input is the generator's softmax: their input channels are the class count.
CLASS_INPUT_MODELS = ("output_space_discriminator",)

flags.DEFINE_string("checkpoint", None, "PyTorch .pth / .bin file (zip or legacy format) or "
                    ".safetensors file.")
flags.DEFINE_enum("architecture", None, [name for name in LAYOUTS.names() if name in MODELS],
                  "Model to build (and, without --layout, the checkpoint's layout).")
flags.DEFINE_enum("layout", None, LAYOUTS.names(),
                  "The checkpoint's layout when it is not the architecture's own: "
                  "deeplab_resnet_init for the DeepLab-v2 init files (backbone loaded, their "
                  "classifier dropped, every head of the model fresh); mit_imagenet for the "
                  "ImageNet MiT encoders of the MiT generators (SegFormer or Hugging Face "
                  "names; the head fresh).")
flags.DEFINE_integer("num_classes", 19, "Classes of the generator's heads.")
flags.DEFINE_enum("aspp_compat", "adaptsegnet", ["adaptsegnet", "full"],
                  "Heads sum rates 6/12 (AdaptSegNet code and checkpoints) or all four (ADVENT).")
flags.DEFINE_list("blocks", ["3", "4", "23", "3"], "ResNet bottlenecks per stage.")
flags.DEFINE_integer("base_width", 64, "Backbone base width.")
flags.DEFINE_integer("num_channels", None,
                     "Discriminators: input channels. Default: --num_classes for "
                     "output_space_discriminator, the model's own (2048) for "
                     "feature_discriminator.")
flags.DEFINE_integer("base_filters", 64, "Discriminators: width of the first conv.")
flags.DEFINE_string("model_options", "{}", "JSON dict of further build options, as train.py's "
                    "(e.g. encoder_options and embed_dim of a small MiT generator).")
flags.DEFINE_string("output", None, "Output .keras file (written atomically).")
flags.mark_flags_as_required(["checkpoint", "architecture", "output"])


def model_options(architecture: str) -> dict:
  """Returns the flag values that the architecture's factory accepts (generators and
  discriminators take different options)."""
  num_channels = FLAGS.num_channels
  if num_channels is None and architecture in CLASS_INPUT_MODELS:
    num_channels = FLAGS.num_classes
  candidates = {
      "num_classes": FLAGS.num_classes, "aspp_compat": FLAGS.aspp_compat,
      "blocks": tuple(int(b) for b in FLAGS.blocks), "base_width": FLAGS.base_width,
      "num_channels": num_channels, "base_filters": FLAGS.base_filters,
  }
  accepted = inspect.signature(MODELS.get(architecture)).parameters
  options = {k: v for k, v in candidates.items() if k in accepted and v is not None}
  options.update(json.loads(FLAGS.model_options))
  return options


def save_atomically(model, output: str) -> None:
  """Saves `model` to `output` through a temporary file, so no partial file is left.

  Raises:
    OSError: when the file cannot be written.
  """
  tmp = f"{output[:-len('.keras')]}.tmp-{os.getpid()}.keras"
  try:
    model.save(tmp)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def fail(subject: str, problem) -> NoReturn:
  """Exits with status 1 after the one-line error `<program>: error: <subject>: <problem>`."""
  sys.exit(f"{PROGRAM}: error: {subject}: {problem}")


def main(argv):
  del argv
  if not FLAGS.output.endswith(".keras"):
    fail(FLAGS.output, "--output must end with .keras")
  try:
    options = model_options(FLAGS.architecture)
  except json.JSONDecodeError as e:
    fail("--model_options", e)
  try:
    model, report = import_torch_checkpoint(FLAGS.checkpoint, FLAGS.architecture, FLAGS.layout,
                                            **options)
  except CheckpointError as e:
    fail(e.path, e.problem)
  except (TypeError, ValueError) as e:  # Options the model does not take (e.g. --blocks).
    fail(f"--architecture={FLAGS.architecture}", e)
  try:
    save_atomically(model, FLAGS.output)
  except OSError as e:
    fail(FLAGS.output, e.strerror or e)
  logging.info("%s -> %s", FLAGS.checkpoint, FLAGS.output)
  print(report.summary())
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
