"""frameflow's version, written once: setup.cfg reads it (``version = attr:``), tracing and metrics report it."""

__version__ = "0.1.0"
