"""A Fast-compatible ERP sync gateway."""

__version__ = "0.1.0"
