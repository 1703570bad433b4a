"""minrep: learn the minimal parameters of a stochastic process from its trajectories."""

__version__ = "0.1.0"


class MinrepError(Exception):
    """Base of every error that reports bad input or a run that cannot go on: the command line
    prints its message as one line, without a traceback."""


def load_model(path_or_name, device="cpu"):
    """A trained model from a run directory or a shipped model name (see minrep.checkpoint)."""
    from minrep.checkpoint import load_model as _load

    return _load(path_or_name, device)
