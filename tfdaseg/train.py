"""Trains a segmentation network with a domain-adaptation method.

Usage:
  python -m tfdaseg.train --flagfile=configs/gta5_to_cityscapes/adaptsegnet_multi.cfg \
      --model_dir=runs/adaptsegnet_multi [--flag=value overrides]

Re-running the same command resumes from the last checkpoint in --model_dir. The flags live in
their own `FlagValues` (several of their names are also evaluate's), joined to absl's global
flags only when this command runs.
"""

from absl import app, flags

from tfdaseg.training import config as train_config
from tfdaseg.training.determinism import restart_without_onednn
from tfdaseg.training import runner
from tfdaseg.training.inputs import DataError
from tfdaseg.training.loop import NonFiniteLossError
from tfdaseg.utils.cli import run_app

FLAGS = flags.FlagValues()
train_config.define_flags(FLAGS)


def main(argv: list[str]) -> None:
  """Runs training from the parsed `FLAGS`; bad settings exit with one clear message."""
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = train_config.TrainConfig.from_flags(FLAGS)
    if config.runtime.deterministic:
      restart_without_onednn()
    runner.run(config)
  except (train_config.ConfigError, DataError, FileNotFoundError, NonFiniteLossError) as e:
    raise SystemExit(f"tfdaseg.train: error: {e}") from None


def run() -> None:
  """Console-script entry point (`tfdaseg-train`)."""
  run_app(main, FLAGS)


if __name__ == "__main__":
  run()
