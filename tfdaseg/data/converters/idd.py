"""IDD (India Driving Dataset): Cityscapes' layout, labels rasterised by IDD's createLabels tool.

Images `leftImg8bit/{split}/<seq>/<frame>_leftImg8bit.png` (or .jpg), labels
`gtFine/{split}/<seq>/<frame>_gtFine_labellevel3Ids.png` (level-3 ids, 255 unlabelled), mapped
to the Cityscapes train ids of the classes IDD shares with Cityscapes.
"""

from tfdaseg.data import labels
from tfdaseg.data.converters import base
from tfdaseg.data.converters.cityscapes import CityscapesLayoutConverter
from tfdaseg.data.converters.registry import CONVERTERS


@CONVERTERS.register("idd")
class IddConverter(CityscapesLayoutConverter):
  """Converts IDD level-3 labels into the cityscapes19 storage space."""

  label_suffix = "_gtFine_labellevel3Ids.png"
  table = base.id_table(labels.IDD_LEVEL3_TO_TRAIN_ID, 256)
