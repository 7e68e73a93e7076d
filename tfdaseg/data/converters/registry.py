"""The dataset converters, by name (`--dataset=NAME` of tools/convert_to_tfrecord.py)."""

from tfdaseg.registry import Registry

CONVERTERS = Registry("dataset")
