"""Generators and discriminators, built by name: `tfdaseg.models.build(name, **options)`."""

from tfdaseg.models.registry import MODELS, build  # noqa: F401
