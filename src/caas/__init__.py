"""caas: the Car-as-a-Service platform."""

__version__ = "0.1.0"
