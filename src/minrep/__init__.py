"""minrep: learn the minimal parameters of a stochastic process from its trajectories."""

__version__ = "0.1.0"


class MinrepError(Exception):
    """Base of every error that reports bad input or a run that cannot go on: the command line
    prints its message as one line, without a traceback."""


def load_model(path_or_name, device="cpu"):
    """A trained model from a run directory or a shipped model name (see minrep.checkpoint)."""
    from minrep.checkpoint import load_model as _load

    return _load(path_or_name, device)


def estimate(model, tracks, *, pixel_size=None, frame_interval=None):
    """alpha and D of each track with 90 % intervals, as a pandas DataFrame (see
    minrep.estimation): ``model`` a run directory or shipped name, ``tracks`` a
    minrep.io.Trajectories or a tracking file / dataset path; ``pixel_size`` (um per pixel)
    and ``frame_interval`` (s) as ``minrep estimate`` takes them."""
    from minrep import estimation, io

    vae, calibration = estimation.model_calibration(model)
    if not isinstance(tracks, io.Trajectories):
        tracks = io.load(tracks, min_steps=vae.config.min_steps)
    return estimation.estimate_in_units(vae, tracks, calibration, pixel_size, frame_interval)[0]
