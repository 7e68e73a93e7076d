"""Writes a content-aligned copy of a converted split with a shifted pixel distribution.

Example:
  python tools/make_transformed_dataset.py --input='data/tfrecords/voc-train-*.tfrecord' \
      --transforms=gamma=1.8,hue_rotation=60,noise=8 --seed=0 --output_dir=data/tfrecords/voc_t

Writes `{output_dir}/{dataset}-{split}-NNNNN-of-NNNNN.tfrecord` (dataset default: the source's
name plus `_transformed`) with the source's shard count and record order, each record keeping
its `image/filename`, label and image-level labels; only the image changes (stored as PNG). The
manifest's `options` name the chain (every strength explicit), its seed and the source pattern.
Transformations (`tfdaseg.data.transforms.TRANSFORMS`): colour_shift, gamma, hue_rotation,
contrast, blur, noise, jpeg, style, camera. Any converted split works (VOC, the demo scenes).
"""

import sys

from absl import app
from absl import flags

from tfdaseg.data import transforms
from tfdaseg.data.converters.transformed import TransformedSplitConverter, TransformOptions
from tfdaseg.data.tfrecord_writer import WriteOptions, write_split
from tfdaseg.utils.cli import run_app

FLAGS = flags.FlagValues()
flags.DEFINE_string("input", None, "TFRecord pattern of one converted split (all its shards).",
                    flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Folder for the copy's shards and manifest.",
                    flag_values=FLAGS)
flags.DEFINE_string("transforms", None, "Chain name[=strength],... applied in order; names: " +
                    "; ".join(f"{name} ({transforms.TRANSFORMS.get(name).meaning}, default "
                              f"{transforms.TRANSFORMS.get(name).default:g})"
                              for name in transforms.TRANSFORMS.names()), flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "Seed of the chain's dataset-wide parameters and its noise.",
                     flag_values=FLAGS)
flags.DEFINE_string("dataset", None, "Dataset name in the copy's file names (default: the "
                    "source's plus _transformed).", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Delete an existing copy of the split first.",
                  flag_values=FLAGS)
flags.DEFINE_integer("num_workers", None, "Encoding processes (default: one per CPU).",
                     flag_values=FLAGS)
flags.mark_flags_as_required(["input", "output_dir", "transforms"], flag_values=FLAGS)


def make_transformed_split(source: str, output_dir: str, chain_text: str, seed: int = 0,
                           dataset: str | None = None, overwrite: bool = False,
                           num_workers: int | None = None) -> dict:
  """Writes the transformed copy of the split `source` matches.

  Args:
    source: TFRecord pattern of a whole converted split.
    output_dir: Folder of the copy.
    chain_text: The transformation chain (`transforms.parse_chain`).
    seed: Its seed.
    dataset: Dataset name of the copy's files (default `<source dataset>_transformed`).
    overwrite: Replace an existing copy.
    num_workers: Encoding processes.

  Returns:
    The copy's manifest.

  Raises:
    ValueError: for a bad chain, a pattern naming several or part of a split, or a copy whose
      shards do not hold the source's record counts.
  """
  chain = transforms.parse_chain(chain_text)
  options = TransformOptions(source=source, transforms=transforms.chain_text(chain), seed=seed)
  converter = TransformedSplitConverter(options)
  name = dataset or f"{converter.source_manifest['dataset']}_transformed"
  manifest = write_split(converter, name, converter.split, output_dir, WriteOptions(
      num_shards=converter.source_manifest["num_shards"], num_workers=num_workers,
      overwrite=overwrite, shuffle_seed=None))
  if manifest["shard_lengths"] != converter.source_manifest["shard_lengths"]:
    raise ValueError(f"{output_dir}: the copy's shards hold {manifest['shard_lengths']} records "
                     f"but the source's {converter.source_manifest['shard_lengths']}; the "
                     "source was not written by tfdaseg's converter in one piece")
  return manifest


def main(argv: list[str]) -> None:
  """Writes the copy the flags describe (absl `app.run` entry point)."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  manifest = make_transformed_split(FLAGS.input, FLAGS.output_dir, FLAGS.transforms, FLAGS.seed,
                                    FLAGS.dataset, FLAGS.overwrite, FLAGS.num_workers)
  print(f"{manifest['count']} images in {manifest['num_shards']} shards, transforms "
        f"{manifest['options']['transforms']} (seed {manifest['options']['seed']})")


def _main_reporting_errors(argv: list[str]) -> None:
  # Bad input (a missing split, a bad chain, a conflicting earlier copy): one line, no traceback.
  try:
    main(argv)
  except (FileNotFoundError, FileExistsError, ValueError, KeyError) as e:
    sys.exit(f"make_transformed_dataset: error: {e.args[0] if isinstance(e, KeyError) else e}")


if __name__ == "__main__":
  run_app(_main_reporting_errors, FLAGS)
