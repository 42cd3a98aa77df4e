"""The single source of the package version (read by hatch and by ``resilient.__version__``)."""

__version__ = "0.1.0.dev0"
