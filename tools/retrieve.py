"""Cross-domain retrieval: are source and target images mixed in the generator's feature space?

  python tools/retrieve.py --model_dir=runs/adaptsegnet --source='data/gta5-val-*' \
      --target='data/cityscapes-val-*' --output_dir=retrieval [--num_images=50] [--k=5]

Embeds up to --num_images images per domain (tfdaseg.evaluation.retrieval), prints how often
the k nearest neighbours of a query come from the other domain (against chance), and writes
retrieval.json and retrieval.png (queries of each domain with their nearest images of the other).
"""

import os

from absl import app, flags

from tfdaseg.data import labels
from tfdaseg.data.pipeline import make_dataset, read_manifest
from tfdaseg.evaluation import cli_flags, plots
from tfdaseg.evaluation.retrieval import DOMAINS, cross_domain_retrieval, embed
from tfdaseg.utils.files import atomic_write_json

flags.DEFINE_string("source", None, "TFRecord file pattern of the source-domain images.")
flags.DEFINE_string("target", None, "TFRecord file pattern of the target-domain images.")
flags.DEFINE_integer("num_images", 50, "Images embedded per domain (the first ones).")
flags.DEFINE_integer("k", 5, "Neighbours per query.")
flags.DEFINE_integer("grid_queries", 3, "Queries per domain shown in retrieval.png.")

FLAGS = flags.FLAGS

RESULT_FILE = "retrieval.json"
GRID_FILE = "retrieval.png"


def _images(pattern: str):
  """One pass over a split, labels read in any class set of its storage space (unused)."""
  space = read_manifest(pattern)["class_space"]
  class_set = next(c for c in labels.CLASS_SETS.values() if c.storage == space)
  return make_dataset(pattern, class_set=class_set, image_size=None, label_size=None,
                      batch_size=1, training=False)


def main(argv: list[str]) -> None:
  """Runs the retrieval of the flags."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (FLAGS.source and FLAGS.target and FLAGS.output_dir):
    raise app.UsageError("--source, --target and --output_dir are required")
  model = cli_flags.load_model_from_flags()
  options = cli_flags.inference_options_from_flags(model)
  embedded = {name: embed(model, _images(pattern), options, FLAGS.num_images)
              for name, pattern in zip(DOMAINS, (FLAGS.source, FLAGS.target))}
  result = cross_domain_retrieval(embedded["source"].vectors, embedded["target"].vectors,
                                  FLAGS.k)

  os.makedirs(FLAGS.output_dir, exist_ok=True)
  other = dict(zip(DOMAINS, reversed(DOMAINS)))
  atomic_write_json(os.path.join(FLAGS.output_dir, RESULT_FILE), {
      "model": model.description,
      "k": result.k,
      "num_images": {name: len(e.filenames) for name, e in embedded.items()},
      "other_domain_fraction": result.other_domain_fraction,
      "chance": result.chance,
      "nearest_of_other_domain": {
          name: {embedded[name].filenames[q]: [embedded[other[name]].filenames[i] for i in hits]
                 for q, hits in enumerate(result.cross_neighbours[name])}
          for name in DOMAINS},
  })
  rows, titles, row_titles = [], [], []
  for name in DOMAINS:
    for query in range(min(FLAGS.grid_queries, len(embedded[name].filenames))):
      hits = result.cross_neighbours[name][query]
      rows.append([embedded[name].thumbnails[query]] +
                  [embedded[other[name]].thumbnails[i] for i in hits])
      titles.append([f"{name} query"] + [
          f"{other[name]} cos {s:.2f}" for s in result.cross_similarity[name][query]])
      row_titles.append(os.path.basename(embedded[name].filenames[query]))
  plots.save_image_grid(rows, os.path.join(FLAGS.output_dir, GRID_FILE), row_titles=row_titles,
                        cell_titles=titles)

  for name in (*DOMAINS, "all"):
    print(f"{name:>6} queries: {100 * result.other_domain_fraction[name]:.1f}% of the "
          f"{result.k} nearest neighbours from the other domain "
          f"(chance {100 * result.chance[name]:.1f}%)")
  print(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
  app.run(main)
