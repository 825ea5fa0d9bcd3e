"""TapMask shared runtime: settings, logging, client factories and the `tapmask` command line."""

__version__ = "0.1.0"
