"""The installed console scripts start and their --help lists the flags the command reads."""

import os
import subprocess
import sys

import pytest
from absl import flags

from tfdaseg.utils import cli

# Console script -> flags its --help must list (its own and the shared ones it reads).
_EXPECTED_FLAGS = {
    "tfdaseg-convert": ("--dataset", "--data_dir", "--output_dir"),
    "tfdaseg-train": ("--method", "--model_dir", "--lambda_adv_target2"),
    "tfdaseg-evaluate": ("--data", "--model_dir", "--class_set", "--flip"),
    "tfdaseg-export": ("--format", "--model_dir", "--output"),
    "tfdaseg-predict": ("--input", "--saved_model", "--output_dir"),
}


@pytest.mark.parametrize("script", sorted(_EXPECTED_FLAGS))
def test_help_lists_the_command_flags(script):
  path = os.path.join(os.path.dirname(sys.executable), script)
  if not os.path.exists(path):
    pytest.skip(f"{script} is not installed next to {sys.executable} (pip install -e .)")
  result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120,
                          check=False)
  # absl's --help exits with status 1.
  assert "USAGE" in result.stdout, result.stderr[-2000:]
  listed = {line.split(":")[0].strip().replace("--[no]", "--")
            for line in result.stdout.splitlines() if line.startswith("  --")}
  assert set(_EXPECTED_FLAGS[script]) <= listed, result.stdout


# Command -> (arguments, the one error line it must end with); {tmp} is an empty folder.
_BAD_INPUTS = {
    "tfdaseg.train": (["--flagfile={tmp}/missing.cfg"],
                      "tfdaseg.train: error: Unable to open flagfile: [Errno 2] No such file or "
                      "directory: '{tmp}/missing.cfg'"),
    "tfdaseg.evaluate": (["--model_dir={tmp}", "--data={tmp}/x-*.tfrecord"],
                         "tfdaseg.evaluate: error: {tmp}/generator.json: no such file"),
}


@pytest.mark.parametrize("command", sorted(_BAD_INPUTS))
def test_bad_inputs_end_with_one_line_naming_the_file(command, tmp_path):
  arguments, expected = _BAD_INPUTS[command]
  result = subprocess.run([sys.executable, "-m", command,
                           *(a.format(tmp=tmp_path) for a in arguments)],
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1] == expected.format(tmp=tmp_path)


def test_helpfull_lists_the_trainer_flags():
  from tfdaseg import train
  joined = flags.FlagValues()
  cli.join_flags(train.FLAGS, joined)
  listed = joined.get_help()
  assert all(name in listed for name in ("--num_steps_stop", "--bn_mode", "--lambda_adv_target1",
                                         "--source_train", "--[no]deterministic")), listed
