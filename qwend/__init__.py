"""qwend: a local daemon for Qwen models."""

__version__ = "0.1.0"
