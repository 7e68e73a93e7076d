"""`python -m tfdaseg.predict`: segments an image, a folder of images or a video.

  python -m tfdaseg.predict --model_dir=runs/gta5_multi --input=street.mp4 --output_dir=out \
      [--input_size=1024,512] [--flip] [--scales=...] [--max_images=8]

Writes NAME_labels.png (class ids), NAME_colour.png and NAME_overlay.png per image and
NAME_overlay.mp4 per video (prediction.py). Exits with status 1 when some input failed.
"""

import os
import sys

from absl import app, flags, logging

from tfdaseg.evaluation import cli_flags
from tfdaseg.evaluation.prediction import Segmenter, list_inputs, predict_paths
from tfdaseg.utils import cli

flags.DEFINE_string("input", None, "An image, a video, or a folder of them (searched "
                    "recursively; outputs keep its subfolders).")
flags.DEFINE_integer("max_images", 0, "Segment at most this many images and videos (0: all).")

FLAGS = flags.FLAGS


def main(argv: list[str]) -> int:
  """Segments --input into --output_dir; returns the exit status."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.input or not FLAGS.output_dir:
    raise app.UsageError("--input and --output_dir are required")
  paths = list_inputs(FLAGS.input)
  root = FLAGS.input if os.path.isdir(FLAGS.input) else None
  model = cli_flags.load_model_from_flags()
  segmenter = Segmenter(model, cli_flags.class_set_from_flags(model),
                        cli_flags.inference_options_from_flags(model))
  summary = predict_paths(segmenter, paths, FLAGS.output_dir, root=root, limit=FLAGS.max_images)
  print(f"{summary.images} images, {summary.videos} videos ({summary.frames} frames) -> "
        f"{FLAGS.output_dir}; {len(summary.skipped)} skipped, {len(summary.failed)} failed")
  for path, reason in summary.failed.items():
    logging.error("failed: %s (%s)", path, reason)
  return 1 if summary.failed else 0


def run() -> None:
  """Console-script entry point (tfdaseg-predict)."""
  cli.run_with_key_flags(lambda argv: sys.exit(main(argv)), [cli_flags.__name__, __name__])


if __name__ == "__main__":
  run()
