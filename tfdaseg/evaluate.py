"""`python -m tfdaseg.evaluate`: mIoU of a generator on a labelled TFRecord split.

  python -m tfdaseg.evaluate --model_dir=runs/gta5_multi --data='data/cityscapes-val-*' \
      --class_set=19 --input_size=1024,512 [--flip] [--scales=0.75,1.0,1.25] [--all_checkpoints]

Writes metrics.json, confusion_matrix.npy, confusion_matrix.png and per_class_iou.png into
--output_dir (default: <model_dir>/eval); with --all_checkpoints also checkpoints.csv/.json and
miou_vs_step.png, the files of the best step, and prints the last and the best step.
"""

import dataclasses

from absl import app, flags, logging

from tfdaseg.data.pipeline import make_dataset, read_manifest
from tfdaseg.evaluation import cli_flags, reports
from tfdaseg.evaluation.evaluator import Evaluator, plan_scoring
from tfdaseg.run_folder import list_checkpoints
from tfdaseg.utils import cli

flags.DEFINE_string("data", None, "File pattern of the labelled TFRecord split to score.")
flags.DEFINE_integer("batch_size", 1, "Images per batch (images of one batch must share a size).")
flags.DEFINE_bool("all_checkpoints", False, "With --model_dir: score every checkpoint of the run.")

FLAGS = flags.FLAGS


def _output_dir(model) -> str:
  if FLAGS.output_dir:
    return FLAGS.output_dir
  if model.model_dir:
    return f"{model.model_dir.rstrip('/')}/eval"
  raise app.UsageError("--output_dir is required unless --model_dir is given")


def main(argv: list[str]) -> None:
  """Evaluates the model of the flags on --data."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.data:
    raise app.UsageError("--data is required")
  model = cli_flags.load_model_from_flags()
  plan = plan_scoring(cli_flags.class_set_from_flags(model), model.class_set)
  options = cli_flags.inference_options_from_flags(model)
  output_dir = _output_dir(model)
  total = read_manifest(FLAGS.data).get("count")
  # label_size=None: scored at the label's own size; the model resizes its input in-graph.
  dataset = make_dataset(FLAGS.data, class_set=plan.matrix_set.name, image_size=None,
                         label_size=None, batch_size=FLAGS.batch_size, training=False)
  evaluator = Evaluator(model, plan, options)
  context = {"data": FLAGS.data, "options": dataclasses.asdict(options)}

  if not FLAGS.all_checkpoints:
    result = evaluator.evaluate(dataset, total=total)
    print(reports.format_table(result))
    reports.write_result(result, output_dir, model=model.description, **context)
    logging.info("wrote %s", output_dir)
    return

  found = list_checkpoints(model.model_dir or "")
  if not found:
    raise app.UsageError("--all_checkpoints needs a --model_dir with checkpoints")
  rows, results = [], {}
  for step, checkpoint in found:
    model.restore(checkpoint)
    results[step] = evaluator.evaluate(dataset, total=total)
    rows.append(reports.checkpoint_row(step, results[step]))
    logging.info("step %d: mIoU %s", step, results[step].metrics["miou"])
  best = reports.write_checkpoint_table(rows, output_dir)
  print(reports.format_table(results[best["step"]]))
  reports.write_result(results[best["step"]], output_dir, step=best["step"],
                       model=f"{model.model_dir} (step {best['step']})", **context)
  last = rows[-1]
  # The best step is chosen on the very split it is scored on (ADVENT's TEST.MODE 'best'); the
  # last step is what an unattended run delivers. Papers mix the two, so both are printed.
  print(f"last step: {last['step']} (mIoU {_percent(last['miou'])})")
  print(f"best step: {best['step']} (mIoU {_percent(best['miou'])}; selected on this split)")


def _percent(miou: float | None) -> str:
  return "n/a" if miou is None else f"{100 * miou:.2f}"


def run() -> None:
  """Console-script entry point (tfdaseg-evaluate)."""
  cli.run_with_key_flags(main, [cli_flags.__name__, __name__])


if __name__ == "__main__":
  run()
