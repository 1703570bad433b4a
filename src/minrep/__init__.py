"""minrep: minimal representations of stochastic processes."""

__version__ = "0.1.0"
