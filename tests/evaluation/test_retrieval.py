"""Cross-domain retrieval: neighbour statistics on known geometry, and tools/retrieve.py."""

import json

import numpy as np
import pytest

from tests.helpers import evaluation as helpers
from tfdaseg.evaluation import retrieval
from tools import retrieve


def _unit(rows):
  rows = np.asarray(rows, np.float64)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_separated_domains_have_no_cross_neighbours():
  source = _unit([[1, 0.0], [1, 0.1], [1, 0.2]])
  target = _unit([[0.0, 1], [0.1, 1]])
  result = retrieval.cross_domain_retrieval(source, target, k=1)
  assert result.other_domain_fraction == {"source": 0.0, "target": 0.0, "all": 0.0}
  assert result.chance["source"] == pytest.approx(2 / 4)
  assert result.chance["target"] == pytest.approx(3 / 4)
  # Across domains the closest target to every source query is the one nearer the x axis.
  np.testing.assert_array_equal(result.cross_neighbours["source"][:, 0], [1, 1, 1])
  np.testing.assert_array_equal(result.cross_neighbours["target"][:, 0], [2, 2])


def test_interleaved_domains_are_each_others_neighbours():
  source = _unit([[1, 0.0], [0.0, 1]])
  target = _unit([[1, 0.01], [0.01, 1]])
  result = retrieval.cross_domain_retrieval(source, target, k=1)
  assert result.other_domain_fraction["all"] == 1.0
  np.testing.assert_array_equal(result.cross_neighbours["source"][:, 0], [0, 1])
  np.testing.assert_allclose(result.cross_similarity["source"][:, 0],
                             (source * target).sum(1))


def test_k_larger_than_a_domain_is_refused():
  with pytest.raises(ValueError, match="k=3"):
    retrieval.cross_domain_retrieval(_unit([[1, 0]] * 2), _unit([[0, 1]] * 5), k=3)


def test_retrieve_tool_writes_statistics_and_grid(tmp_path, capsys):
  helpers.make_model_dir(str(tmp_path / "run"))
  dark = helpers.random_images(4, seed=1) // 4
  bright = 192 + helpers.random_images(3, seed=2) // 4
  source = helpers.write_split(str(tmp_path / "data"), dark, dataset="src", split="val")
  target = helpers.write_split(str(tmp_path / "data"), bright, dataset="tgt", split="val")
  out = tmp_path / "out"
  helpers.run_cli(retrieve.main, ["retrieve", f"--model_dir={tmp_path / 'run'}",
                                  f"--source={source}", f"--target={target}", "--k=2",
                                  "--num_images=3", f"--output_dir={out}"])
  result = json.loads((out / retrieve.RESULT_FILE).read_text())
  assert result["num_images"] == {"source": 3, "target": 3}
  assert 0.0 <= result["other_domain_fraction"]["all"] <= 1.0
  assert result["chance"]["all"] == pytest.approx(3 / 5)
  assert len(result["nearest_of_other_domain"]["source"]["image_000.png"]) == 2
  assert (out / retrieve.GRID_FILE).exists()
  assert "nearest neighbours from the other domain" in capsys.readouterr().out
