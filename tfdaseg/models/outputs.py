"""The generators' output-dict contract: every model returns these keys, every reader uses them.

Per level, the main head (the reference's pred2, on layer4) and the auxiliary head (pred1, on
layer3 of a multi-level model): logits at stride 8 and the features each head reads.
"""

LOGITS = "logits"
AUX_LOGITS = "aux_logits"
FEATURES = "features"
AUX_FEATURES = "aux_features"
# HRDA (tfdaseg.models.hrda): the detail windows' logits on the fused map (0 outside them) and
# [B, 4] (y1, y2, x1, x2) their extent in input pixels, for the detail crop's loss.
DETAIL_LOGITS = "detail_logits"
DETAIL_BOX = "detail_box"

# Level name ("main", "aux") -> output key.
LEVEL_LOGITS = {"main": LOGITS, "aux": AUX_LOGITS}
LEVEL_FEATURES = {"main": FEATURES, "aux": AUX_FEATURES}
# Outputs holding class logits (cut to a class subset together at export).
LOGIT_KEYS = (LOGITS, AUX_LOGITS, DETAIL_LOGITS)
