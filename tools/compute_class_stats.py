"""Writes the per-image class statistics of a converted split (for --rare_class_sampling).

The converter writes them for every labelled split it converts; this tool writes them for a
split converted before they were recorded, next to its manifest
(`{dataset}-{split}-class_stats.json`, tfdaseg.data.class_stats).

Usage:
  python tools/compute_class_stats.py --data=/data/tfrecords/gta5-train-*.tfrecord
"""

import sys

from absl import app, flags, logging

from tfdaseg.data import class_stats

_DATA = flags.DEFINE_string("data", None, "The split's TFRecord shards (a glob).", required=True)


def main(argv: list[str]) -> None:
  del argv
  # Bad input (no shards, no manifest, an unlabelled or truncated record): one line naming it.
  try:
    logging.info("wrote %s", class_stats.compute_class_stats(_DATA.value))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"compute_class_stats: error: {e}")


if __name__ == "__main__":
  app.run(main)
