"""Flags shared by the evaluate, export and predict commands and the tools built on them.

absl flags are process-global, so each name is defined once, here, and the commands import
this module; `load_model_from_flags` and `inference_options_from_flags` turn them into objects.
"""

from absl import app, flags

from tfdaseg.data import labels
from tfdaseg.data.resizing import DEFAULT_INTERPOLATION
from tfdaseg.evaluation.inference import IMAGE_RESIZERS, InferenceOptions
from tfdaseg.evaluation.loading import MODEL_SOURCES, LoadedModel, load_model
from tfdaseg.models.output_conventions import output_conventions

flags.DEFINE_string("model_dir", None, "A training run's folder (generator.json + checkpoints).")
flags.DEFINE_string("checkpoint", None, "With --model_dir: a checkpoint prefix instead of the "
                    "latest one.")
flags.DEFINE_string("network", None, "With --model_dir: the network to load, 'generator' or a "
                    "method network of its architecture (e.g. 'teacher'). Default: the run's "
                    "inference network (generator.json), which its method chose.")
flags.DEFINE_string("model", None, "A .keras generator file.")
flags.DEFINE_string("saved_model", None, "A SavedModel folder written by tfdaseg-export.")
flags.DEFINE_string("model_class_set", None, "The class set the model predicts, when its "
                    "source does not record it (a bare .keras file).")
flags.DEFINE_enum("class_set", None, list(labels.CLASS_SETS), "The classes to score, serve or "
                  "draw; default: the model's class set.")
flags.DEFINE_list("input_size", None, "W,H the model runs at (reference: 1024,512 for "
                  "Cityscapes); default: the size the model was trained at.")
flags.DEFINE_list("scales", ["1.0"], "Test-time scales of --input_size; softmax outputs are "
                  "averaged.")
flags.DEFINE_bool("flip", False, "Average with horizontally flipped images (test-time "
                  "augmentation).")
flags.DEFINE_enum("resize", DEFAULT_INTERPOLATION, IMAGE_RESIZERS.names(), "Image filter "
                  "to --input_size (and the test-time scales): bicubic, antialiased like the "
                  "reference's PIL BICUBIC loaders and the training pipeline's default, or "
                  "bilinear (cheaper; aliases when shrinking; TFLite's only one). Labels are "
                  "never resized: evaluation scores at the label's own size.")
flags.DEFINE_list("slide_window", None, "W,H of overlapping sliding windows the model runs on "
                  "(their logits averaged), in pixels of --input_size; HRDA tests with "
                  "1024,1024 at --input_size=2048,1024. Default: the whole image at once.")
flags.DEFINE_list("slide_stride", None, "W,H step of --slide_window (HRDA: 512,512). Default: "
                  "half the window.")
flags.DEFINE_string("output", None, "The folder to write.")
flags.DEFINE_string("output_dir", None, "The folder to write results to.")

FLAGS = flags.FLAGS


def _parse_size(values: list[str] | None, flag: str = "input_size") -> tuple[int, int] | None:
  if not values:
    return None
  if len(values) != 2:
    raise app.UsageError(f"--{flag} wants W,H, got {','.join(values)}")
  return int(values[0]), int(values[1])


def load_model_from_flags() -> LoadedModel:
  """Loads the model named by exactly one of --model_dir, --model, --saved_model.

  Raises:
    app.UsageError: when none or several are given.
  """
  given = {name: FLAGS[name].value for name in MODEL_SOURCES if FLAGS[name].value}
  if len(given) != 1:
    raise app.UsageError("give exactly one of " +
                                ", ".join(f"--{name}" for name in MODEL_SOURCES))
  (source, path), = given.items()
  return load_model(source, path, checkpoint=FLAGS.checkpoint,
                    class_set=FLAGS.model_class_set, network=FLAGS.network)


def inference_options_from_flags(model: LoadedModel) -> InferenceOptions:
  """--input_size (or the model's), --scales, --flip and --resize as `InferenceOptions`.

  Raises:
    app.UsageError: when neither --input_size nor the model gives the size to run at (an
      imported `.keras` file): running at the image's own size (2048x1024 for Cityscapes) would
      silently score another protocol than the references' 1024x512.
  """
  input_size = _parse_size(FLAGS.input_size) or model.input_size
  if input_size is None:
    raise app.UsageError(f"{model.description} records no input size (no export.json beside "
                         "it): pass --input_size=W,H (the references run Cityscapes at 1024,512)")
  return InferenceOptions(
      input_size=input_size,
      scales=tuple(float(s) for s in FLAGS.scales),
      flip=FLAGS.flip,
      resize=FLAGS.resize,
      slide_window=_parse_size(FLAGS.slide_window, "slide_window"),
      slide_stride=_parse_size(FLAGS.slide_stride, "slide_stride"),
      # A SavedModel holds its own options; the others follow the generator's family.
      align_corners=(True if model.generator is None
                     else output_conventions(model.generator).align_corners),
  )


def class_set_from_flags(model: LoadedModel) -> labels.ClassSet:
  """--class_set, or the model's class set."""
  return labels.get_class_set(FLAGS.class_set) if FLAGS.class_set else model.class_set
