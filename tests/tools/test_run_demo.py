"""`make demo` at toy size: the same stages and public commands, in about a minute."""

import json
import os
import subprocess
import sys

from tfdaseg.utils.stages import Stages

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run_demo(tmp_path, *extra):
  return subprocess.run(
      [sys.executable, os.path.join(_REPO, "tools", "run_demo.py"), "--scale=tiny",
       f"--out={tmp_path / 'out'}", f"--data={tmp_path / 'data'}", *extra],
      cwd=_REPO, capture_output=True, text=True, timeout=600, check=False)


def test_tiny_demo_runs_end_to_end_and_reuses_its_stages(tmp_path):
  first = _run_demo(tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  out = tmp_path / "out"
  report = json.loads((out / "report.json").read_text())
  for run in ("source_only", "adapted"):
    assert 0.0 <= report[run]["target_miou"] <= 1.0
    assert report[run]["per_class_iou"]
  assert abs(report["gain_miou"] - (report["adapted"]["target_miou"]
                                    - report["source_only"]["target_miou"])) < 1e-9
  for artefact in ("report.md", "per_class_iou.png", "predictions_grid.png",
                   "training_curves.png", "saved_model/saved_model.pb"):
    assert (out / artefact).is_file(), artefact
  assert list((out / "predictions").rglob("*.png"))

  checkpoints = sorted(p.name for p in (out / "runs" / "adapted").glob("ckpt-*.index"))
  second = _run_demo(tmp_path)
  assert second.returncode == 0, second.stderr[-3000:]
  # A finished stage starts no process: every one is reused and none logs its command.
  stages = ("data", "convert source_train", "convert target_train", "convert target_val",
            "train source_only", "train adapted", "evaluate source_only", "evaluate adapted",
            "export", "predict")
  for stage in stages:
    assert f"[{stage}] reusing" in second.stderr, stage
  assert "done in" not in second.stderr
  assert sorted(p.name for p in (out / "runs" / "adapted").glob("ckpt-*.index")) == checkpoints
  assert json.loads((out / "report.json").read_text())["adapted"] == report["adapted"]



def _stage_command(out_file):
  return ["-c", f"open({str(out_file)!r}, 'a').write('x')"]


def test_stages_rerun_from_the_first_changed_one(tmp_path):
  runs = tmp_path / "runs.txt"
  config = tmp_path / "stage.cfg"
  config.write_text("--a=1\n")

  def run_all(fresh=False, second_argv=()):
    stages = Stages(folder=str(tmp_path / "stages"), fresh=fresh)
    os.makedirs(stages.folder, exist_ok=True)
    stages.run("first", _stage_command(runs), [str(runs)])
    stages.run("second", [*_stage_command(runs), f"--flagfile={config}", *second_argv],
               [str(runs)])
    stages.run("third", _stage_command(runs), [str(runs)])
    return runs.read_text().count("x")

  assert run_all() == 3
  assert run_all() == 3  # all reused
  config.write_text("--a=2\n")
  assert run_all() == 5  # an edited config: its stage and the later one
  assert run_all(second_argv=("--b",)) == 7  # a changed command: the same
  assert run_all(fresh=True) == 10
  runs.unlink()
  assert run_all() == 3  # a missing output re-runs
