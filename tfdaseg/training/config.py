"""The training command's config: nested sections whose flags are derived from their fields.

`TrainConfig` = model, data (class sets, validation split, default batch), streams (the
method's, `tfdaseg.training.inputs`), optimisation, loop, runtime, and the method's own config
(its `config_class`). Each section is a dataclass of `tfdaseg.utils.config_fields.field`s, so a
hyper-parameter is declared once, in the module that reads it, and its flag, help, range and
default follow; the flag names are the AdaptSegNet reference's (`--learning_rate`,
`--lambda_adv_target1`, `--input_size`, ...), so its configs keep working.

`define_flags` declares them on a `FlagValues`; `TrainConfig.from_flags` reads them back (the
method's fields the user did not set take that method's defaults); `validate` rejects
impossible settings with one clear message each, before anything heavy runs (the data checks,
which read manifests, are in `tfdaseg.training.inputs`).
"""

import dataclasses
import inspect

from absl import flags

from tfdaseg import methods, models
from tfdaseg.data import labels
from tfdaseg.data.rare_class_sampling import RareClassSampling
from tfdaseg.data.resizing import DEFAULT_INTERPOLATION, INTERPOLATIONS
from tfdaseg.models.batch_norm import BN_MODES
from tfdaseg.models.hrda import HrdaConfig
from tfdaseg.training import inputs, labelled_target
from tfdaseg.training.loop import LoopConfig
from tfdaseg.training.model import OptimizationConfig
from tfdaseg.training.precision import POLICIES
from tfdaseg.training.strategies import STRATEGIES
from tfdaseg.utils import config_fields
from tfdaseg.utils.config_fields import ConfigError, field

__all__ = ["ConfigError", "TrainConfig", "define_flags", "validate"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The generator and its initialisation.

  Args:
    model: Registry name of the generator.
    blocks: Bottlenecks per ResNet stage (None: the model's).
    base_width: Backbone base width (None: the model's).
    bn_mode: BatchNorm behaviour in training (`tfdaseg.models.batch_norm`).
    aspp_compat: Classifier-head variant.
    model_options: Further build options.
    hrda: Wrap the generator in HRDA's multi-resolution training and inference.
    hrda_options: HRDA settings (`tfdaseg.models.hrda.HrdaConfig` fields).
    init_weights: Local ImageNet weights for the backbone (.h5; .pth/.bin/.safetensors for MiT).
    restore_from: A .keras generator whose weights initialise the generator.
  """

  model: str = field("deeplab_v2_resnet101_multi", "Generator (tfdaseg.models registry); "
                     "reference: deeplab_v2_resnet101_multi (multi-level), "
                     "deeplab_v2_resnet101_single, deeplab_v2_vgg16; DAFormer: daformer_mit_b5 "
                     "(also b0-b4, and segformer_mit_b0-b5).")
  blocks: tuple[int, ...] | None = field(None, "Bottlenecks per ResNet stage; reference 3,4,23,3 "
                                         "(ResNet-101); 1,1,1,1 for tiny models. Default: the "
                                         "model's.")
  base_width: int | None = field(None, "Backbone base width; reference 64. Default: the "
                                 "model's.", minimum=1)
  bn_mode: str = field("reference", "BatchNorm in training: reference (batch statistics, "
                       "running statistics updated with torch's momentum 0.1, gamma/beta fixed: "
                       "AdaptSegNet's and ADVENT's model.train()), frozen (inference mode) or "
                       "train (everything trained, from scratch).", choices=BN_MODES)
  aspp_compat: str = field("adaptsegnet", "Classifier heads: 'adaptsegnet' sums rates 6,12 (the "
                           "AdaptSegNet code and checkpoints), 'full' sums 6/12/18/24 (ADVENT).",
                           choices=("adaptsegnet", "full"))
  model_options: dict = field(
      {}, "JSON dict of further generator build options, e.g. for a MiT generator "
      '\'{"embed_dim": 64, "drop_path_rate": 0.1, "encoder_options": {"recompute": true}}\' '
      "(the registered factory's arguments; encoder_options: MitConfig fields).")
  hrda: bool = field(False, "HRDA (Hoyer et al., ECCV 2022) around a MiT generator: a context "
                     "view at half resolution and a full-resolution detail window (random in "
                     "training, sliding otherwise), fused by a learned scale attention; the "
                     "detail window's own CE weighs --detail_loss_weight.")
  hrda_options: dict = field({}, "JSON dict of HRDA settings (tfdaseg.models.hrda.HrdaConfig): "
                             "context_scale (0.5), detail_crop (512 or [h, w]), crop_divisible "
                             "(8), overlapping_slide (true), attention_embed_dim (256), "
                             "attention_classwise (true).")
  init_weights: str | None = field(None, "Local ImageNet .h5 (keras.applications layout) to "
                                   "initialise the backbone; for the MiT generators, the ImageNet "
                                   "MiT encoder (mit_bX.pth, or Hugging Face's .bin / "
                                   ".safetensors).")
  restore_from: str | None = field(None, "A .keras generator (e.g. imported from a PyTorch "
                                   "checkpoint) whose weights initialise the generator.")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Class sets, the validation split and the default batch (the streams have their own flags).

  Args:
    class_set: Class set of the source data and the generator.
    target_class_set: Class set of the target data (None: class_set).
    num_classes: Optional check of the class count.
    target_val: Labelled target split scored every --eval_every steps.
    batch_size: Global batch of every stream without its own --{stream}_batch_size.
    interpolation: Image resize filter of training and validation.
  """

  class_set: str = field("19", "Class set of the source data and the generator (reference: 19 "
                         "for GTA5, 16 for SYNTHIA).", choices=tuple(labels.CLASS_SETS))
  target_class_set: str | None = field(None, "Class set of the target data when it differs "
                                       "(e.g. 11 for CamVid with class_set="
                                       "cityscapes_as_camvid11). Default: class_set.",
                                       choices=tuple(labels.CLASS_SETS))
  num_classes: int | None = field(None, "Optional check: must equal the class set's size "
                                  "(reference 19).")
  target_val: str | None = field(None, "Optional labelled target split scored every "
                                 "--eval_every steps (mIoU), to pick the best snapshot.")
  batch_size: int = field(1, "Global batch per sub-batch of every stream (reference 1).",
                          minimum=1)
  interpolation: str = field(DEFAULT_INTERPOLATION, "Image resize filter of the training streams "
                             "and validation: bicubic (antialiased, like the reference's PIL "
                             "BICUBIC) or bilinear (cheaper, aliases when shrinking).",
                             choices=tuple(INTERPOLATIONS))


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Where and how the steps run.

  Args:
    strategy: Distribution strategy.
    xla: XLA for the loss-and-gradient step.
    mixed_precision: Compute precision.
    deterministic: Deterministic ops.
  """

  strategy: str = field("auto", "Distribution: auto (mirrored on >1 GPU, else one device), "
                        "one_device, mirrored, multi_worker (TF_CONFIG).",
                        choices=tuple(STRATEGIES.names()))
  xla: str = field("auto", "XLA for the loss-and-gradient step: auto = on for GPU/TPU, off on "
                   "CPU (slower there).", choices=("auto", "on", "off"))
  mixed_precision: str = field("none", "Compute precision; float16 uses dynamic loss scaling.",
                               choices=tuple(POLICIES))
  deterministic: bool = field(False, "Bit-identical checkpoints for the same command on the "
                              "same machine: op determinism, one inter-op thread, oneDNN's "
                              "custom CPU ops off (tfdaseg.training.determinism); slower.")


# Sections whose flags are generated from their fields (name on TrainConfig -> class).
SECTIONS = {"model": ModelConfig, "data": DataConfig, "optimization": OptimizationConfig,
            "loop": LoopConfig, "runtime": RuntimeConfig,
            "labelled_target": labelled_target.LabelledTargetConfig,
            "rare_class_sampling": RareClassSampling}


def define_flags(fv: flags.FlagValues) -> None:
  """Declares the training flags on `fv`: the sections', every method's and every stream's."""
  flags.DEFINE_string("model_dir", None, "Run folder: generator.json, checkpoints, TensorBoard "
                      "events, validation.json. Re-running with the same folder resumes.",
                      flag_values=fv)
  flags.DEFINE_string("method", "adaptsegnet", "Training objective (tfdaseg.methods registry): "
                      + ", ".join(methods.METHODS.names()) + ".", flag_values=fv)
  for section in SECTIONS.values():
    config_fields.define_flags(section, fv)
  for name in methods.METHODS.names():
    config_fields.define_flags(methods.METHODS.get(name).config_class, fv, owner=name)
  inputs.define_stream_flags(fv)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Every setting of a training run.

  Args:
    model_dir: The run folder.
    method_name: Registry name of the method.
    method: Its config (an instance of its `config_class`).
    model: Generator settings.
    data: Class sets, validation split, default batch.
    streams: Stream name -> config, the method's streams.
    optimization: Generator optimiser and schedule.
    loop: Periods, stop step, seed.
    runtime: Strategy, XLA, precision, determinism.
    labelled_target: Which target images the labelled target streams read.
    rare_class_sampling: Whether (and how) the source stream is drawn by rare class sampling.
  """

  model_dir: str | None
  method_name: str
  method: methods.MethodConfig
  model: ModelConfig
  data: DataConfig
  streams: dict
  optimization: OptimizationConfig
  loop: LoopConfig
  runtime: RuntimeConfig
  labelled_target: labelled_target.LabelledTargetConfig
  rare_class_sampling: RareClassSampling

  @classmethod
  def from_flags(cls, fv: flags.FlagValues) -> "TrainConfig":
    """Reads the parsed flags.

    Raises:
      ConfigError: for an unknown method, or a value that does not parse or is out of range.
    """
    name = fv["method"].value
    if name not in methods.METHODS:
      raise ConfigError(f"unknown --method={name!r}; known: "
                        f"{', '.join(methods.METHODS.names())}")
    method_class = methods.METHODS.get(name)
    sections = {key: config_fields.from_flags(section, fv) for key, section in SECTIONS.items()}
    data = sections["data"]
    domain_class_sets = {methods.SOURCE: data.class_set,
                         methods.TARGET: data.target_class_set or data.class_set}
    try:
      method_config = config_fields.from_flags(method_class.config_class, fv)
    except ValueError as e:
      raise ConfigError(f"--method={name}: {e}") from None
    streams = inputs.stream_configs(fv, method_class, batch_size=data.batch_size,
                                    domain_class_sets=domain_class_sets)
    return cls(model_dir=fv["model_dir"].value, method_name=name, method=method_config,
               streams=streams, **sections)

  @property
  def model_class_set(self) -> labels.ClassSet:
    """The class set the generator predicts (and the source data holds)."""
    return labels.get_class_set(self.data.class_set)

  @property
  def target_classes(self) -> labels.ClassSet:
    """The class set the target data holds."""
    return labels.get_class_set(self.data.target_class_set or self.data.class_set)

  @property
  def target_size(self) -> tuple[int, int]:
    """(width, height) the target domain is trained (and validated, exported) at."""
    target = self.streams.get(methods.TARGET)
    return target.size if target else next(iter(self.streams.values())).size

  def generator_options(self) -> dict:
    """Build options of the generator (`tfdaseg.models.build(self.model.model, **options)`);
    --aspp_compat only for generators with DeepLab-v2 heads (it has a default, so it cannot say
    whether it was given)."""
    options = {"num_classes": self.model_class_set.num_classes, "bn_mode": self.model.bn_mode}
    if "aspp_compat" in inspect.signature(models.MODELS.get(self.model.model)).parameters:
      options["aspp_compat"] = self.model.aspp_compat
    if self.model.blocks is not None:
      options["blocks"] = self.model.blocks
    if self.model.base_width is not None:
      options["base_width"] = self.model.base_width
    options.update(self.model.model_options)
    if self.model.hrda:
      options["hrda"] = dict(self.model.hrda_options)
    return options

  def build_method(self) -> methods.Method:
    """The configured method."""
    return methods.build(self.method_name, num_classes=self.model_class_set.num_classes,
                         config=self.method)


def _require(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def validate(config: TrainConfig, *, require_model_dir: bool = True) -> None:
  """Checks what the sections cannot check alone, without data or models.

  Args:
    config: The settings (each section already range-checked).
    require_model_dir: Whether --model_dir must be given (not for parsing a config file alone).

  Raises:
    ConfigError: one clear message for the first problem found.
  """
  _require(not require_model_dir or bool(config.model_dir), "--model_dir is required")
  _require(config.model.model in models.MODELS,
           f"unknown --model={config.model.model!r}; known: {', '.join(models.MODELS.names())}")
  model_classes = config.model_class_set.num_classes
  _require(config.target_classes.num_classes == model_classes,
           f"--target_class_set={config.target_classes.name} has "
           f"{config.target_classes.num_classes} classes but --class_set={config.data.class_set} "
           f"has {model_classes}: the generator predicts one set for both domains")
  _require(config.data.num_classes is None or config.data.num_classes == model_classes,
           f"--num_classes={config.data.num_classes} but --class_set={config.data.class_set} "
           f"has {model_classes} classes")
  _require(config.loop.num_steps_stop <= config.optimization.num_steps,
           f"--num_steps_stop={config.loop.num_steps_stop} is past --num_steps="
           f"{config.optimization.num_steps} (the learning rate reaches 0 at num_steps)")
  _require(config.model.hrda or not config.model.hrda_options, "--hrda_options needs --hrda")
  if config.model.hrda:
    try:
      HrdaConfig.from_options(config.model.hrda_options)
    except (TypeError, ValueError) as e:
      raise ConfigError(f"--hrda_options: {e}") from None
  _require(not (config.model.init_weights and config.model.restore_from),
           "give --init_weights (ImageNet backbone) or --restore_from (whole generator), not both")
  _require(config.loop.eval_every == 0 or bool(config.data.target_val),
           f"--eval_every={config.loop.eval_every} needs --target_val")
  labelled_target.check(config.labelled_target, config.streams, config.method_name)
  mixed = {name: config.streams[name].output_size
           for name in methods.METHODS.get(config.method_name).same_size_streams}
  _require(len(set(mixed.values())) <= 1,
           f"--method={config.method_name} mixes the streams {sorted(mixed)} pixel by pixel but "
           f"their training sizes (W, H) differ: {mixed}; give their sizes (--input_size, "
           "--input_size_target) or crops (--source_augment, --target_augment) one size")
  for stream in config.streams.values():
    _require(bool(stream.pattern), f"--method={config.method_name} reads the {stream.name} "
             f"stream: --{stream.flag} (a TFRecord file pattern) is required")
  _require(not methods.METHODS.get(config.method_name).starts_from_trained_generator
           or bool(config.model.restore_from),
           f"--method={config.method_name} starts from a trained generator (its teacher): give "
           "--restore_from=<the source-only model.keras>")
