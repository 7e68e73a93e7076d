"""Converts a segmentation dataset split into sharded TFRecords plus a manifest.

Example:
  python tools/convert_to_tfrecord.py --dataset=gta5 --data_dir=/data/GTA5 --split=train
      --output_dir=/data/tfrecords --num_workers=8

Writes `{output_dir}/{dataset}-{split}-NNNNN-of-NNNNN.tfrecord`, the manifest
`{output_dir}/{dataset}-{split}.json` and TFDS metadata. Re-running resumes an interrupted
conversion; `--overwrite` starts again. Datasets: see `tfdaseg.data.converters.CONVERTERS`.
"""

import os
import sys

from absl import app
from absl import flags

from tfdaseg.data.converters import CONVERTERS
from tfdaseg.data.converters import ConverterOptions
from tfdaseg.data.tfrecord_writer import WriteOptions
from tfdaseg.data.tfrecord_writer import write_split
from tfdaseg.utils.cli import run_app

# The tool's own flag registry: other tfdaseg CLIs define --output_dir, --resize, ... too, and
# one process (a test run) may import several of them. `run` adds these flags to absl's.
FLAGS = flags.FlagValues()
_DEFINES = (
    (flags.DEFINE_string, "dataset", None, "Dataset layout: one of "
     f"{', '.join(CONVERTERS.names())}."),
    (flags.DEFINE_string, "data_dir", None, "The dataset's root folder (for tfds_cityscapes: "
     "the TFDS data_dir)."),
    (flags.DEFINE_string, "split", None, "Split to convert (train, val, test, trainaug, ...)."),
    (flags.DEFINE_string, "output_dir", None, "Folder for shards, manifest and TFDS metadata."),
    (flags.DEFINE_integer, "num_shards", None, "Number of shards (default: ~128 MiB each)."),
    (flags.DEFINE_string, "list_file", None, "Only the images named in this file, one a line."),
    (flags.DEFINE_bool, "overwrite", False, "Delete an existing conversion of the split first."),
    (flags.DEFINE_bool, "skip_bad", False, "Skip bad files with a warning (listed in the "
     "manifest) instead of stopping."),
    (flags.DEFINE_bool, "unlabeled", False, "Write images only, without labels."),
    (flags.DEFINE_integer, "num_workers", None, "Encoding processes (default: one per CPU, "
     "fewer for a split of under 32 images per CPU; 0 or 1: none)."),
    (flags.DEFINE_string, "resize", None, "Resize images (bicubic) and labels (nearest) to "
     "WxH; default: store images exactly as on disk."),
    (flags.DEFINE_bool, "camvid_colour_labels", False, "camvid: labels are the original "
     "32-colour RGB images."),
    (flags.DEFINE_string, "sbd_dir", None, "voc: the SBD release (cls/, train.txt, val.txt), "
     "for split trainaug."),
    (flags.DEFINE_string, "label_map", None, 'folder: JSON {"storage": ..., "map": {"raw id": '
     "storage id}}."),
)
for _define, _name, _default, _help in _DEFINES:
  _define(_name, _default, _help, flag_values=FLAGS)
flags.mark_flags_as_required(["dataset", "data_dir", "split", "output_dir"], flag_values=FLAGS)

def parse_size(text: str | None) -> tuple[int, int] | None:
  """Parses "WxH" into (width, height); None stays None.

  Raises:
    ValueError: when `text` is not two positive integers joined by "x".
  """
  if text is None:
    return None
  try:
    width, height = (int(v) for v in text.lower().split("x"))
  except ValueError:
    raise ValueError(f"--resize={text!r}: expected WIDTHxHEIGHT, e.g. 1280x720") from None
  if width <= 0 or height <= 0:
    raise ValueError(f"--resize={text!r}: width and height must be positive")
  return width, height


def main(argv: list[str]) -> None:
  """Converts the split the flags name (absl `app.run` entry point)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  options = ConverterOptions(
      list_file=FLAGS.list_file,
      unlabeled=FLAGS.unlabeled,
      camvid_colour_labels=FLAGS.camvid_colour_labels,
      sbd_dir=FLAGS.sbd_dir,
      label_map=FLAGS.label_map,
  )
  converter = CONVERTERS.get(FLAGS.dataset)(os.path.abspath(FLAGS.data_dir), options)
  write_split(converter, FLAGS.dataset, FLAGS.split, FLAGS.output_dir, WriteOptions(
      num_shards=FLAGS.num_shards,
      num_workers=FLAGS.num_workers,
      overwrite=FLAGS.overwrite,
      skip_bad=FLAGS.skip_bad,
      resize=parse_size(FLAGS.resize),
  ))



def _main_reporting_errors(argv: list[str]) -> None:
  # Bad input (a missing folder, a bad file, a conflicting earlier conversion) gets one line
  # naming the file, not a traceback.
  try:
    main(argv)
  except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    sys.exit(f"convert_to_tfrecord: error: {e.args[0] if isinstance(e, KeyError) else e}")


def run() -> None:
  """Console-script entry point (`tfdaseg-convert`)."""
  run_app(_main_reporting_errors, FLAGS)


if __name__ == "__main__":
  run()
