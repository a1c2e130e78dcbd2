"""Accord gateway: the service that brokers data exchanges between departments."""

__all__ = ["__version__"]

__version__ = "0.1.0"
