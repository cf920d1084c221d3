"""Laptop side: the `launcher` CLI and the importable API beneath it. Never imports torch."""
__version__ = "0.1.0"
