"""Every registered method passes the shared method test (tests/helpers/methods.py)."""

import pytest

from tests.helpers.methods import run_method_test
from tfdaseg import methods

# case -> (method, hyper-parameters); every registered method needs at least one row.
CASES = {
    "source_only": ("source_only", {}),
    "target_only": ("target_only", {}),
    "adaptsegnet_multi": ("adaptsegnet", {}),
    "adaptsegnet_feature_single": ("adaptsegnet", {"adapt_space": "feature", "levels": "single",
                                                   "lambda_seg": 0.0}),
    "advent_both": ("advent", {"advent_mode": "both"}),
    "source_and_target": ("source_and_target", {}),
    "adaptsegnet_ssl": ("adaptsegnet_ssl", {}),
    "ass": ("ass", {"semantic_discriminator_hidden": 8, "semantic_mask_ratio": 0.0}),
    "region_selection_per_class": ("region_selection", {"weight_maps": "per_class",
                                                        "weighting_hidden": 4,
                                                        "region_grid": (2, 2)}),
    "region_selection_superpixels": ("region_selection", {"regions": "superpixels",
                                                          "superpixel_segments": 6,
                                                          "weighting_hidden": 4}),
    "ts3_strong50": ("ts3", {"strong_fraction": 0.5}),
    "feature_regression_both_levels": ("feature_regression", {"regress_layers": ("main", "aux")}),
    "dacs_mic_fd": ("dacs", {"mic": True, "mic_block_size": 8, "pseudo_ignore_top": 64,
                             "pseudo_ignore_bottom": 64, "feature_distance_weight": 0.005,
                             "feature_distance_classes": (1, 2)}),
}


def test_every_registered_method_is_covered():
  covered = {method for method, _ in CASES.values()}
  assert set(methods.METHODS.names()) <= covered, (
      f"add a row to CASES for {sorted(set(methods.METHODS.names()) - covered)}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_method(case, tmp_path):
  name, options = CASES[case]
  run_method_test(name, str(tmp_path), **options)
