"""`python -m tfdaseg.export`: writes a SavedModel, .keras or .tflite of a trained generator.

  python -m tfdaseg.export --model_dir=runs/gta5_multi --output=exports/gta5_multi \
      [--format=saved_model|keras|tflite] [--input_size=1024,512] [--class_set=19]
"""

from absl import app, flags

from tfdaseg.evaluation import cli_flags
from tfdaseg.export.exporter import EXPORT_FORMATS, ExportRequest, export_model
from tfdaseg.utils import cli

flags.DEFINE_enum("format", "saved_model", EXPORT_FORMATS.names(), "What to write.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")

FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  """Exports the model of the flags into --output."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.output:
    raise app.UsageError("--output is required")
  model = cli_flags.load_model_from_flags()
  request = ExportRequest(model=model, class_set=cli_flags.class_set_from_flags(model),
                          options=cli_flags.inference_options_from_flags(model))
  print(export_model(request, FLAGS.output, FLAGS.format, overwrite=FLAGS.overwrite))


def run() -> None:
  """Console-script entry point (tfdaseg-export)."""
  cli.run_with_key_flags(main, [cli_flags.__name__, __name__])
