"""Save and load a trained model: ``model.safetensors`` (weights) + ``config.json``.

Loading reads tensors and JSON only; no code in a model file is ever run (no pickle).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minrep import MinrepError
from minrep.io import atomic_write
from minrep.model import VAE, ModelConfig

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PRETRAINED = Path(__file__).parent / "pretrained"


class ModelFileError(MinrepError, ValueError):
    """A model directory that cannot be loaded, with the reason."""


def save_model(model: VAE, directory, extra: dict | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (model config plus ``extra``, e.g. the
    training settings) into ``directory``, each atomically. Returns the directory. Weights
    that are not all finite are refused: nothing is written."""
    directory = Path(directory)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    _check_finite(state, directory / WEIGHTS, "cannot be saved")
    with atomic_write(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
    return save_config(model.config, directory, extra)


def save_config(config: ModelConfig, directory, extra: dict | None = None) -> Path:
    """Write ``config.json`` (model configuration plus ``extra``) atomically."""
    directory = Path(directory)
    document = {"model": config.to_dict(), **(extra or {})}
    with atomic_write(directory / CONFIG) as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    return directory


def resolve(path_or_name) -> Path:
    """A model directory from a path (a run directory or an exported model) or the name of a
    shipped model (``bm``, ``fbm``, ``sbm``)."""
    path = Path(path_or_name)
    if path.is_dir():
        return path
    shipped = PRETRAINED / str(path_or_name)
    if shipped.is_dir():
        return shipped
    names = (
        sorted(p.name for p in PRETRAINED.iterdir() if p.is_dir()) if PRETRAINED.is_dir() else []
    )
    raise ModelFileError(
        f"{path_or_name}: not a model directory"
        + (f" nor a shipped model ({', '.join(names)})" if names else "")
    )


def load_model(path_or_name, device: str | torch.device = "cpu") -> VAE:
    """Load a model saved by :func:`save_model` (or a shipped model by name), in eval mode."""
    directory = resolve(path_or_name)
    config_path, weights_path = directory / CONFIG, directory / WEIGHTS
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise ModelFileError(f"{directory}: no {needed.name}")
    try:
        document = json.loads(config_path.read_text())
        config = ModelConfig.from_dict(document["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelFileError(f"{config_path}: not a minrep model configuration ({err})") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ModelFileError(f"{weights_path}: not a safetensors file ({err})") from None
    _check_finite(state, weights_path, "cannot be used")
    model = VAE(config)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelFileError(f"{weights_path}: weights do not fit {config_path} ({err})") from None
    model.training_range = _training_range(document, config_path)
    return model.to(device).eval()


def _check_finite(state: dict[str, torch.Tensor], path: Path, consequence: str) -> None:
    """Refuse weights holding NaN or infinities, naming the tensors: such a model encodes
    and generates NaN."""
    bad = {
        name: int((~torch.isfinite(t)).sum())
        for name, t in state.items()
        if t.is_floating_point() and not torch.isfinite(t).all()
    }
    if bad:
        first, *others = bad
        also = ", ".join(map(repr, others[:3])) + (" ..." if len(others) > 3 else "")
        raise ModelFileError(
            f"{path}: tensor {first!r} holds {bad[first]} non-finite value(s) (NaN or "
            f"infinity)" + (f", as do {also}" if others else "") + f"; the model {consequence}"
        )


def _training_range(document: dict, config_path: Path) -> dict | None:
    """``data.training_range`` of a config.json, checked: ``{"alpha": [lo, hi], "D": [lo,
    hi]}`` and, for a model trained with a measurement, ``"exposure"`` and ``"reduced_noise"``
    (:func:`minrep.train.training_range`), with finite lo <= hi, or None where the run did not
    record it."""
    data = document.get("data")
    if not isinstance(data, dict) or data.get("training_range") is None:
        return None
    values = data["training_range"]
    try:
        keys = ("alpha", "D", *(k for k in ("exposure", "reduced_noise") if k in values))
        checked = {key: [float(values[key][0]), float(values[key][1])] for key in keys}
    except (KeyError, IndexError, TypeError, ValueError):
        checked = None
    if checked is None or not all(
        math.isfinite(lo) and math.isfinite(hi) and lo <= hi for lo, hi in checked.values()
    ):
        raise ModelFileError(
            f"{config_path}: data.training_range must be {{'alpha': [lo, hi], 'D': [lo, hi]}} "
            f"with finite lo <= hi, got {values!r}"
        )
    return checked


def read_config(path_or_name) -> dict:
    """The whole ``config.json`` of a model directory (model and training settings)."""
    path = resolve(path_or_name) / CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: cannot be read ({err})") from None
