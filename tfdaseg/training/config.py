"""The training command's flags (named like the AdaptSegNet reference's arguments) and their checks.

`define_flags` declares them on a `FlagValues`; `TrainConfig.from_flags` reads them back;
`validate` rejects impossible settings with one clear message each, before anything heavy runs
(the data checks, which read manifests, are in `tfdaseg.training.inputs`).
"""

import dataclasses
import json
from typing import Any

from absl import flags

from tfdaseg import methods, models
from tfdaseg.data import labels
from tfdaseg.methods.adversarial import LEVELS
from tfdaseg.methods.adaptsegnet import ADAPT_SPACES
from tfdaseg.methods.advent import ADVENT_MODES
from tfdaseg.methods.gan_losses import GAN_LOSSES
from tfdaseg.training.precision import POLICIES
from tfdaseg.training.strategies import STRATEGIES

# The output-space discriminator halves its input five times (AdaptSegNet FCDiscriminator).
MIN_INPUT_SIZE = 32


class ConfigError(ValueError):
  """A flag value (or combination) that cannot work."""


def define_flags(fv: flags.FlagValues) -> None:
  """Declares the training flags on `fv` (reference values in each help)."""
  d = dict(flag_values=fv)
  flags.DEFINE_string("model_dir", None, "Run folder: generator.json, checkpoints, TensorBoard "
                      "events, validation.json. Re-running with the same folder resumes.", **d)
  flags.DEFINE_string("method", "adaptsegnet", "Training objective (tfdaseg.methods registry): "
                      + ", ".join(methods.METHODS.names()) + ".", **d)
  flags.DEFINE_string("model", "deeplab_v2_resnet101_multi", "Generator (tfdaseg.models "
                      "registry); reference: deeplab_v2_resnet101_multi (multi-level), "
                      "deeplab_v2_resnet101_single, deeplab_v2_vgg16.", **d)
  flags.DEFINE_list("blocks", None, "Bottlenecks per ResNet stage; reference 3,4,23,3 "
                    "(ResNet-101); 1,1,1,1 for tiny models. Default: the model's.", **d)
  flags.DEFINE_integer("base_width", None, "Backbone base width; reference 64. Default: the "
                       "model's.", **d)
  flags.DEFINE_bool("freeze_bn", True, "Freeze BatchNorm (reference: yes, on pretrained "
                    "statistics; use --nofreeze_bn when training from scratch).", **d)
  flags.DEFINE_enum("aspp_compat", "adaptsegnet", ["adaptsegnet", "full"], "Classifier heads: "
                    "'adaptsegnet' sums rates 6,12 (the AdaptSegNet code and checkpoints), "
                    "'full' sums 6/12/18/24 (ADVENT).", **d)
  flags.DEFINE_string("model_options", "{}", "JSON dict of further generator build options.",
                      **d)
  flags.DEFINE_string("class_set", "19", "Class set of the source data and the generator: "
                      + ", ".join(labels.CLASS_SETS) + " (reference: 19 for GTA5, 16 for "
                      "SYNTHIA).", **d)
  flags.DEFINE_string("target_class_set", None, "Class set of the target data when it differs "
                      "(e.g. 11 for CamVid with class_set=cityscapes_as_camvid11). Default: "
                      "class_set.", **d)
  flags.DEFINE_integer("num_classes", None, "Optional check: must equal the class set's size "
                       "(reference 19).", **d)
  flags.DEFINE_string("source_train", None, "TFRecord file pattern of the labelled source "
                      "training split (e.g. data/gta5-train-*.tfrecord).", **d)
  flags.DEFINE_string("target_train", None, "TFRecord file pattern of the target training split "
                      "(unlabelled for adaptation; labelled for target_only).", **d)
  flags.DEFINE_string("target_val", None, "Optional labelled target split scored every "
                      "--eval_every steps (mIoU), to pick the best snapshot.", **d)
  flags.DEFINE_string("input_size", "1280,720", "Source training size W,H (reference "
                      "1280,720 for GTA5).", **d)
  flags.DEFINE_string("input_size_target", "1024,512", "Target training size W,H (reference "
                      "1024,512 for Cityscapes).", **d)
  flags.DEFINE_integer("batch_size", 1, "Global batch per sub-batch (reference 1).", **d)
  flags.DEFINE_integer("iter_size", 1, "Sub-batches accumulated per step (reference 1).", **d)
  flags.DEFINE_float("learning_rate", 2.5e-4, "Generator SGD base rate; heads 10x "
                     "(reference 2.5e-4).", **d)
  flags.DEFINE_float("learning_rate_d", 1e-4, "Discriminator Adam rate (reference 1e-4).", **d)
  flags.DEFINE_float("momentum", 0.9, "Generator SGD momentum (reference 0.9).", **d)
  flags.DEFINE_float("weight_decay", 0.0005, "Generator L2 weight decay, PyTorch style "
                     "(reference 0.0005).", **d)
  flags.DEFINE_float("power", 0.9, "Poly learning-rate decay power (reference 0.9).", **d)
  flags.DEFINE_integer("num_steps", 250000, "Poly decay length in steps (reference 250000).",
                       **d)
  flags.DEFINE_integer("num_steps_stop", 150000, "Stop after this many steps (reference 150000; "
                       "ADVENT 120000).", **d)
  flags.DEFINE_float("lambda_seg", 0.1, "Weight of the aux head's cross-entropy (reference 0.1; "
                     "0 for single-level).", **d)
  flags.DEFINE_float("lambda_adv_target1", 0.0002, "Adversarial weight, aux level (reference "
                     "0.0002).", **d)
  flags.DEFINE_float("lambda_adv_target2", 0.001, "Adversarial weight, main level (reference "
                     "0.001; 0.01 with --gan=ls).", **d)
  flags.DEFINE_float("lambda_ent_target1", 0.0002, "Entropy weight, aux level (ADVENT 0.0002).",
                     **d)
  flags.DEFINE_float("lambda_ent_target2", 0.001, "Entropy weight, main level (ADVENT 0.001).",
                     **d)
  flags.DEFINE_enum("levels", "multi", list(LEVELS), "AdaptSegNet/ADVENT levels: multi (aux + "
                    "main heads) or single (main head).", **d)
  flags.DEFINE_enum("adapt_space", "output", list(ADAPT_SPACES), "AdaptSegNet: align the "
                    "softmax output (reference) or the heads' input features.", **d)
  flags.DEFINE_enum("gan", "vanilla", GAN_LOSSES.names(), "Adversarial loss: vanilla (BCE, "
                    "reference) or ls (least squares).", **d)
  flags.DEFINE_enum("advent_mode", "advent", list(ADVENT_MODES), "ADVENT: minent, advent or "
                    "both.", **d)
  flags.DEFINE_integer("discriminator_base_filters", 64, "Discriminator width (reference ndf "
                       "64).", **d)
  flags.DEFINE_string("init_weights", None, "Local ImageNet .h5 (keras.applications layout) to "
                      "initialise the backbone.", **d)
  flags.DEFINE_string("restore_from", None, "A .keras generator (e.g. imported from a PyTorch "
                      "checkpoint) whose weights initialise the generator.", **d)
  flags.DEFINE_integer("save_pred_every", 5000, "Checkpoint period in steps (reference 5000).",
                       **d)
  flags.DEFINE_integer("keep_checkpoints", 5, "Checkpoints kept.", **d)
  flags.DEFINE_integer("summary_every", 10, "TensorBoard scalar period in steps (0: never).",
                       **d)
  flags.DEFINE_integer("image_summary_every", 1000, "TensorBoard prediction-grid period "
                       "(0: never).", **d)
  flags.DEFINE_integer("eval_every", 0, "Validation period on --target_val (0: never).", **d)
  flags.DEFINE_enum("strategy", "auto", STRATEGIES.names(), "Distribution: auto (mirrored on "
                    ">1 GPU, else one device), one_device, mirrored, multi_worker (TF_CONFIG).",
                    **d)
  flags.DEFINE_enum("xla", "auto", ["auto", "on", "off"], "XLA for the loss-and-gradient step: "
                    "auto = on for GPU/TPU, off on CPU (slower there).", **d)
  flags.DEFINE_enum("mixed_precision", "none", list(POLICIES), "Compute precision; float16 "
                    "uses dynamic loss scaling.", **d)
  flags.DEFINE_bool("deterministic", False, "Deterministic ops "
                    "(tf.config.experimental.enable_op_determinism); slower.", **d)
  flags.DEFINE_integer("random_seed", 1234, "Seed of weights and data order (reference 1234).",
                       **d)


def parse_size(text: str, name: str) -> tuple[int, int]:
  """Parses "W,H" into (width, height).

  Raises:
    ConfigError: naming the flag, when malformed, non-positive or below MIN_INPUT_SIZE.
  """
  try:
    width, height = (int(part) for part in str(text).split(","))
  except ValueError:
    raise ConfigError(f"--{name}={text!r}: expected W,H (e.g. 1280,720)") from None
  if min(width, height) < MIN_INPUT_SIZE:
    raise ConfigError(f"--{name}={text!r}: width and height must be >= {MIN_INPUT_SIZE} (the "
                      "discriminator downsamples by 32, the generator by 8)")
  return width, height


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of a training run (one field per flag; see `define_flags`)."""

  model_dir: str | None
  method: str
  model: str
  blocks: tuple[int, ...] | None
  base_width: int | None
  freeze_bn: bool
  aspp_compat: str
  model_options: dict
  class_set: str
  target_class_set: str | None
  num_classes: int | None
  source_train: str | None
  target_train: str | None
  target_val: str | None
  input_size: str
  input_size_target: str
  batch_size: int
  iter_size: int
  learning_rate: float
  learning_rate_d: float
  momentum: float
  weight_decay: float
  power: float
  num_steps: int
  num_steps_stop: int
  lambda_seg: float
  lambda_adv_target1: float
  lambda_adv_target2: float
  lambda_ent_target1: float
  lambda_ent_target2: float
  levels: str
  adapt_space: str
  gan: str
  advent_mode: str
  discriminator_base_filters: int
  init_weights: str | None
  restore_from: str | None
  save_pred_every: int
  keep_checkpoints: int
  summary_every: int
  image_summary_every: int
  eval_every: int
  strategy: str
  xla: str
  mixed_precision: str
  deterministic: bool
  random_seed: int

  @classmethod
  def from_flags(cls, fv: flags.FlagValues) -> "TrainConfig":
    """Reads the parsed flags.

    Raises:
      ConfigError: when --blocks or --model_options do not parse.
    """
    values: dict[str, Any] = {f.name: fv[f.name].value for f in dataclasses.fields(cls)}
    if values["blocks"] is not None:
      try:
        values["blocks"] = tuple(int(b) for b in values["blocks"])
      except ValueError:
        raise ConfigError(f"--blocks={','.join(values['blocks'])}: expected integers, "
                          "e.g. 3,4,23,3") from None
    try:
      values["model_options"] = json.loads(values["model_options"] or "{}")
    except json.JSONDecodeError as e:
      raise ConfigError(f"--model_options: not valid JSON ({e})") from None
    if not isinstance(values["model_options"], dict):
      raise ConfigError("--model_options must be a JSON object")
    return cls(**values)

  @property
  def source_size(self) -> tuple[int, int]:
    """(width, height) of source images."""
    return parse_size(self.input_size, "input_size")

  @property
  def target_size(self) -> tuple[int, int]:
    """(width, height) of target images."""
    return parse_size(self.input_size_target, "input_size_target")

  @property
  def model_class_set(self) -> labels.ClassSet:
    """The class set the generator predicts (and the source data holds)."""
    return labels.get_class_set(self.class_set)

  @property
  def target_classes(self) -> labels.ClassSet:
    """The class set the target data holds."""
    return labels.get_class_set(self.target_class_set or self.class_set)

  def generator_options(self) -> dict:
    """Build options of the generator (`tfdaseg.models.build(self.model, **options)`)."""
    options = {"num_classes": self.model_class_set.num_classes, "freeze_bn": self.freeze_bn,
               "aspp_compat": self.aspp_compat}
    if self.blocks is not None:
      options["blocks"] = self.blocks
    if self.base_width is not None:
      options["base_width"] = self.base_width
    options.update(self.model_options)
    return options

  def method_config(self) -> methods.MethodConfig:
    """The method's hyper-parameters."""
    return methods.MethodConfig(
        num_classes=self.model_class_set.num_classes, lambda_seg=self.lambda_seg,
        lambda_adv_target1=self.lambda_adv_target1, lambda_adv_target2=self.lambda_adv_target2,
        lambda_ent_target1=self.lambda_ent_target1, lambda_ent_target2=self.lambda_ent_target2,
        levels=self.levels, adapt_space=self.adapt_space, gan=self.gan,
        advent_mode=self.advent_mode,
        discriminator_base_filters=self.discriminator_base_filters)

  def build_method(self) -> methods.Method:
    """The configured method (validated)."""
    return methods.build(self.method, self.method_config())


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def validate(config: TrainConfig, *, require_model_dir: bool = True) -> None:
  """Checks every setting that can be checked without data or models.

  Args:
    config: The settings.
    require_model_dir: Whether --model_dir must be given (not for parsing a config file alone).

  Raises:
    ConfigError: one clear message for the first problem found.
  """
  _require(not require_model_dir or bool(config.model_dir), "--model_dir is required")
  _require(config.method in methods.METHODS,
           f"unknown --method={config.method!r}; known: {', '.join(methods.METHODS.names())}")
  _require(config.model in models.MODELS,
           f"unknown --model={config.model!r}; known: {', '.join(models.MODELS.names())}")
  for flag in ("class_set", "target_class_set"):
    name = getattr(config, flag)
    _require(name is None or name in labels.CLASS_SETS,
             f"unknown --{flag}={name!r}; known: {', '.join(labels.CLASS_SETS)}")
  model_classes = config.model_class_set.num_classes
  _require(config.target_classes.num_classes == model_classes,
           f"--target_class_set={config.target_classes.name} has "
           f"{config.target_classes.num_classes} classes but --class_set={config.class_set} has "
           f"{model_classes}: the generator predicts one set for both domains")
  _require(config.num_classes is None or config.num_classes == model_classes,
           f"--num_classes={config.num_classes} but --class_set={config.class_set} has "
           f"{model_classes} classes")
  parse_size(config.input_size, "input_size")
  parse_size(config.input_size_target, "input_size_target")
  for flag in ("batch_size", "iter_size", "num_steps", "num_steps_stop", "save_pred_every",
               "keep_checkpoints", "discriminator_base_filters"):
    _require(getattr(config, flag) >= 1, f"--{flag}={getattr(config, flag)} must be >= 1")
  for flag in ("summary_every", "image_summary_every", "eval_every"):
    _require(getattr(config, flag) >= 0, f"--{flag}={getattr(config, flag)} must be >= 0")
  _require(config.num_steps_stop <= config.num_steps,
           f"--num_steps_stop={config.num_steps_stop} is past --num_steps={config.num_steps} "
           "(the learning rate reaches 0 at num_steps)")
  for flag in ("learning_rate", "learning_rate_d"):
    _require(getattr(config, flag) > 0, f"--{flag}={getattr(config, flag)} must be > 0")
  for flag in ("weight_decay", "power", "lambda_seg", "lambda_adv_target1", "lambda_adv_target2",
               "lambda_ent_target1", "lambda_ent_target2"):
    _require(getattr(config, flag) >= 0, f"--{flag}={getattr(config, flag)} must be >= 0")
  _require(0 <= config.momentum < 1, f"--momentum={config.momentum} must be in [0, 1)")
  _require(not (config.init_weights and config.restore_from),
           "give --init_weights (ImageNet backbone) or --restore_from (whole generator), not both")
  _require(config.eval_every == 0 or bool(config.target_val),
           f"--eval_every={config.eval_every} needs --target_val")
  try:
    method = config.build_method()
  except ValueError as e:
    raise ConfigError(f"--method={config.method}: {e}") from None
  for stream in method.streams:
    flag = f"{stream}_train"
    _require(bool(getattr(config, flag)), f"--method={config.method} reads the {stream} domain: "
             f"--{flag} (a TFRecord file pattern) is required")
