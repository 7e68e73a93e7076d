"""bench/config_step.py: the configs' steps as the trainer parses them, scaled to a bench crop."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "bench"))
from config_step import HRDA_CONFIG, daformer_overrides, hrda_overrides, train_config  # noqa: E402


def test_the_hrda_line_keeps_hrda_with_half_the_bench_crop_as_its_detail_window():
  config = train_config(HRDA_CONFIG, daformer_overrides("b0", batch=1)
                        + hrda_overrides((320, 164)))
  options = config.generator_options()
  assert config.model.model == "daformer_mit_b0"
  # 164 // 2 = 82, rounded down to HRDA's crop_coord_divisible 8.
  assert options["hrda"]["detail_crop"] == [80, 160]
  assert config.method.detail_loss_weight == 0.1
