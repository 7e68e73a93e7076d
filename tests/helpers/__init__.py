"""Shared test helpers, one module per area (datasets.py: miniature datasets and readers)."""
