"""The training flags: every shipped config parses and validates; bad settings fail clearly."""

import glob
import os

import pytest
from absl import flags

from tests.helpers import training as helpers
from tfdaseg.training import config as train_config
from tfdaseg.training import inputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED_CONFIGS = {
    "gta5_to_cityscapes": {"source_only", "target_only", "adaptsegnet_single",
                           "adaptsegnet_single_lsgan", "adaptsegnet_multi", "adaptsegnet_feature",
                           "advent", "advent_minent", "ass_100", "ass_200", "ass_500",
                           "ass_1000", "ass_all", "dacs", "dacs_daformer", "daformer", "hrda",
                           "mic_hrda"},
    "synthia_to_cityscapes": {"source_only", "adaptsegnet_multi", "advent", "ass_100", "dacs",
                              "dacs_daformer", "daformer"},
    "synthia_to_camvid": {"adaptsegnet_multi"},
    "voc_transformed": {"source_only", "feature_regression", "finetune"},
    "voc": {"supervised", "ts3_strong50", "ts3_strong0"},
}
# Configs named after the experiment rather than their method: name -> method.
CONFIG_METHODS = {"finetune": "target_only", "supervised": "source_only", "daformer": "dacs",
                  "hrda": "dacs", "mic_hrda": "dacs"}


def parse(*argv: str) -> train_config.TrainConfig:
  fv = flags.FlagValues()
  train_config.define_flags(fv)
  fv(["train", *argv])
  return train_config.TrainConfig.from_flags(fv)


def config_path(setting: str, name: str) -> str:
  return os.path.join(REPO, "configs", setting, f"{name}.cfg")


def test_every_expected_config_exists():
  for setting, names in EXPECTED_CONFIGS.items():
    found = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(REPO, "configs", setting,
                                                                       "*.cfg"))}
    assert found == names, setting


@pytest.mark.parametrize("setting,name", sorted(
    (s, n) for s, names in EXPECTED_CONFIGS.items() for n in names))
def test_config_parses_and_validates(setting, name):
  path = config_path(setting, name)
  with open(path) as f:
    header = [line for line in f if line.startswith("#")]
  # The top comment cites the reported mIoU and its source (or says there is none).
  assert any(line.startswith("# Reported:") for line in header)
  config = parse(f"--flagfile={path}")
  train_config.validate(config, require_model_dir=False)
  method = config.build_method()
  assert config.method_name == CONFIG_METHODS.get(name, config.method_name) and (
      config.method_name in name or name in CONFIG_METHODS)
  assert config.model_class_set.num_classes == config.target_classes.num_classes
  # The reference setup: multi-level configs use the two-head model, single-level the one-head.
  if getattr(config.method, "levels", None) == "multi" and method.networks():
    assert config.model.model == "deeplab_v2_resnet101_multi"


@pytest.mark.parametrize("setting", ["gta5_to_cityscapes", "synthia_to_cityscapes"])
@pytest.mark.parametrize("name", ["daformer", "dacs_daformer"])
def test_daformer_configs_crop_the_source_with_cat_max_ratio(setting, name):
  # lhoyer/DAFormer configs/_base_/datasets/uda_{gta,synthia}_to_cityscapes_512x512.py: the
  # source pipeline's RandomCrop has cat_max_ratio=0.75 (line 16), the target's none (line 28).
  streams = parse(f"--flagfile={config_path(setting, name)}").streams
  assert streams["source"].augment.cat_max_ratio == 0.75
  assert streams["target"].augment.cat_max_ratio is None
  assert streams["source"].augment.crop_size == streams["target"].augment.crop_size == (512, 512)


def test_reference_defaults():
  config = parse()
  optimization, loop, method = config.optimization, config.loop, config.method
  assert (optimization.learning_rate, method.learning_rate_d, optimization.momentum,
          optimization.weight_decay, optimization.power, optimization.num_steps,
          loop.num_steps_stop, method.lambda_seg, method.lambda_adv_target1,
          method.lambda_adv_target2, config.data.batch_size, loop.iter_size,
          config.streams["source"].size, config.target_size, loop.random_seed) == (
              2.5e-4, 1e-4, 0.9, 0.0005, 0.9, 250000, 150000, 0.1, 0.0002, 0.001, 1, 1,
              (1280, 720), (1024, 512), 1234)


DATA = ["--source_train=s-*.tfrecord", "--target_train=t-*.tfrecord", "--model_dir=/tmp/x"]
BAD_SETTINGS = {
    "unknown method": (["--method=cycada"], "known: adaptsegnet, .*region_selection, .*source_only"),
    "unknown model": (["--model=unet"], "known: "),
    "size not W,H": (["--input_size=1280x720"], "expected W,H"),
    "size too small": (["--input_size_target=16,512"], ">= 32"),
    "stop past decay": (["--num_steps=10", "--num_steps_stop=20"], "past --num_steps"),
    "class sets differ": (["--class_set=16", "--target_class_set=19"], "--class_set=16 has 16"),
    "num_classes": (["--num_classes=16"], "--num_classes=16"),
    "missing target data": (["--target_train="], "--target_train"),
    "eval without data": (["--eval_every=10"], "needs --target_val"),
    "both inits": (["--init_weights=a.h5", "--restore_from=b.keras"], "not both"),
    "zero batch": (["--batch_size=0"], "--batch_size=0"),
    "negative weight": (["--lambda_adv_target2=-1"], "must be >= 0"),
    "bad blocks": (["--blocks=3,x"], "expected integers"),
    "no model_dir": (["--model_dir="], "--model_dir is required"),
    "labelled count and list": (["--method=ass", "--target_labeled_count=5",
                                 "--target_labeled_list=a.txt"], "not both"),
    "labelled count, no stream": (["--target_labeled_count=5"],
                                  "--method=adaptsegnet reads no labelled target stream"),
    "labelled count 0": (["--method=ass", "--target_labeled_count=0"], "must be >= 1"),
    "rare class sampling temperature": (["--rare_class_sampling", "--rcs_temperature=0"],
                                        "rcs_temperature"),
    "crop cat_max_ratio 1": (['--source_augment={"crop_size": [64, 64], "cat_max_ratio": 1}'],
                             "--source_augment=.*0 < cat_max_ratio < 1"),
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_fail_with_one_clear_message(case):
  argv, message = BAD_SETTINGS[case]
  with pytest.raises(train_config.ConfigError, match=message.replace("(", r"\(")):
    train_config.validate(parse(*DATA, *argv))


def test_enum_flags_are_checked_when_parsing():
  with pytest.raises(flags.IllegalFlagValueError):
    parse("--gan=wgan")


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory):
  return helpers.write_tiny_tfrecords(str(tmp_path_factory.mktemp("data")))


def test_data_patterns_and_class_spaces_are_checked(tfrecords, tmp_path):
  base = [f"--{k}={v}" for k, v in tfrecords.items()] + [f"--model_dir={tmp_path}"]
  config = parse(*base)
  inputs.check_streams(config.streams)
  assert set(config.streams) == {"source", "target"}
  missing = parse(*base, f"--source_train={tmp_path}/nothing-*.tfrecord")
  with pytest.raises(inputs.DataError, match="--source_train=.*no file matches"):
    inputs.check_streams(missing.streams)
  camvid = parse(*base, "--class_set=11")
  with pytest.raises(inputs.DataError, match="'cityscapes19' labels but class set '11'"):
    inputs.check_streams(camvid.streams)
  oracle = parse(*base, "--method=target_only")
  with pytest.raises(inputs.DataError, match="--target_train=.*converted without labels"):
    inputs.check_streams(oracle.streams)
  labelled = parse(*base, "--method=target_only", f"--target_train={tfrecords['target_val']}")
  inputs.check_streams(labelled.streams)
  assert set(labelled.streams) == {"target"}


@pytest.mark.parametrize("name", ["hrda", "mic_hrda"])
def test_hrda_configs_wrap_daformer_in_hrda(name):
  config = parse(f"--flagfile={config_path('gta5_to_cityscapes', name)}")
  options = config.generator_options()
  assert (config.model.model, options["hrda"]) == ("daformer_mit_b5", {"detail_crop": 512})
  assert config.method.detail_loss_weight == 0.1 and config.method.mic == (name == "mic_hrda")
  assert config.streams["source"].augment.crop_size == (1024, 1024)
  assert config.rare_class_sampling.min_crop_ratio == 2.0


def test_hrda_options_need_hrda_and_known_keys():
  with pytest.raises(train_config.ConfigError, match="--hrda_options needs --hrda"):
    train_config.validate(parse('--hrda_options={"detail_crop": 8}'), require_model_dir=False)
  with pytest.raises(train_config.ConfigError, match="unknown HRDA options"):
    train_config.validate(parse("--hrda", '--hrda_options={"crop": 8}'), require_model_dir=False)
