"""Converts a PyTorch checkpoint of a reference model (AdaptSegNet / ADVENT) to a `.keras` file.

PyTorch is not needed: the `.pth` is read by tfdaseg's restricted unpickler. The output loads with
`keras.models.load_model(path)` after `import tfdaseg`.

Example (AdaptSegNet's released GTA5 -> Cityscapes multi-level model):
  python -m tools.import_torch_checkpoint --checkpoint=GTA2Cityscapes_multi-ed35151c.pth \
      --architecture=deeplab_v2_resnet101_multi --num_classes=19 --aspp_compat=adaptsegnet \
      --output=gta2cityscapes_multi.keras
"""

import inspect
import os

from absl import app, flags, logging

from tfdaseg.models.registry import MODELS
from tfdaseg.models.torch_import import LAYOUTS, import_torch_checkpoint

FLAGS = flags.FLAGS

flags.DEFINE_string("checkpoint", None, "PyTorch .pth file (zip or legacy format).")
flags.DEFINE_enum("architecture", None, LAYOUTS.names(), "Model (and checkpoint layout) name.")
flags.DEFINE_integer("num_classes", 19, "Classes of the generator's heads.")
flags.DEFINE_enum("aspp_compat", "adaptsegnet", ["adaptsegnet", "full"],
                  "Heads sum rates 6/12 (AdaptSegNet code and checkpoints) or all four (ADVENT).")
flags.DEFINE_list("blocks", ["3", "4", "23", "3"], "ResNet bottlenecks per stage.")
flags.DEFINE_integer("base_width", 64, "Backbone base width.")
flags.DEFINE_integer("num_channels", None, "Discriminators: input channels.")
flags.DEFINE_integer("base_filters", 64, "Discriminators: width of the first conv.")
flags.DEFINE_boolean("allow_missing_heads", False,
                     "Accept a checkpoint without some head (e.g. the one-head DeepLab COCO init "
                     "for the multi-level model); such heads keep their initialisation.")
flags.DEFINE_string("output", None, "Output .keras file (written atomically).")
flags.mark_flags_as_required(["checkpoint", "architecture", "output"])


def model_options(architecture: str) -> dict:
  """The flag values that the architecture's factory accepts (generators and discriminators
  take different options)."""
  candidates = {
      "num_classes": FLAGS.num_classes, "aspp_compat": FLAGS.aspp_compat,
      "blocks": tuple(int(b) for b in FLAGS.blocks), "base_width": FLAGS.base_width,
      "num_channels": FLAGS.num_channels, "base_filters": FLAGS.base_filters,
  }
  accepted = inspect.signature(MODELS.get(architecture)).parameters
  return {k: v for k, v in candidates.items() if k in accepted and v is not None}


def main(argv):
  del argv
  if not FLAGS.output.endswith(".keras"):
    raise app.UsageError(f"--output must end with .keras, got {FLAGS.output}")
  model, report = import_torch_checkpoint(FLAGS.checkpoint, FLAGS.architecture,
                                          FLAGS.allow_missing_heads,
                                          **model_options(FLAGS.architecture))
  tmp = f"{FLAGS.output[:-len('.keras')]}.tmp-{os.getpid()}.keras"
  try:
    model.save(tmp)
    os.replace(tmp, FLAGS.output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  logging.info("%s -> %s", FLAGS.checkpoint, FLAGS.output)
  print(report.summary())
  print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
