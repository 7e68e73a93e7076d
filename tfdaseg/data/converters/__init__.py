"""Dataset converters: one module per dataset layout, registered in `CONVERTERS` by name.

Importing this package registers every converter.
"""

from tfdaseg.data.converters import camvid  # noqa: F401
from tfdaseg.data.converters import cityscapes  # noqa: F401
from tfdaseg.data.converters import folder  # noqa: F401
from tfdaseg.data.converters import gta5  # noqa: F401
from tfdaseg.data.converters import idd  # noqa: F401
from tfdaseg.data.converters import synthia  # noqa: F401
from tfdaseg.data.converters import tfds_cityscapes  # noqa: F401
from tfdaseg.data.converters import voc  # noqa: F401
from tfdaseg.data.converters.base import BadFileError  # noqa: F401
from tfdaseg.data.converters.base import Converter  # noqa: F401
from tfdaseg.data.converters.base import ConverterOptions  # noqa: F401
from tfdaseg.data.converters.base import SourcePair  # noqa: F401
from tfdaseg.data.converters.registry import CONVERTERS  # noqa: F401
