"""The method registry: training objectives looked up by name (`--method`)."""

from tfdaseg.registry import Registry

METHODS: Registry = Registry("method")
