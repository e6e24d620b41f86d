"""runyard: a self-hosted automation runner."""

__version__ = "0.1.0"
