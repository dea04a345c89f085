"""The ``frameflow`` command line (the console script's entry point is :func:`main`)."""

from .main import main

__all__ = ["main"]
