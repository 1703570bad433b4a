"""Tests of minrep.checkpoint: the safetensors + config.json round trip, bad model directories,
and the training range a model directory records."""

import json
import os
import re
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

from minrep.checkpoint import PRETRAINED, ModelFileError, load_model, read_config, save_model
from minrep.model import VAE, ModelConfig


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    model = VAE(ModelConfig(latent_dim=4, log_scale_mean=-3.2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(model, tmp_path / "run", {"training": {"note": "test"}})
    loaded = load_model(tmp_path / "run")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.config == model.config
    assert read_config(tmp_path / "run")["training"] == {"note": "test"}
    x = torch.randn(3, 1, 80)
    torch.testing.assert_close(model.encode(x), loaded.encode(x), rtol=0, atol=0)


def test_loading_bad_model_directories(tmp_path):
    with pytest.raises(ModelFileError, match="not a model directory"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="no config.json"):
        load_model(tmp_path / "empty")
    save_model(VAE(ModelConfig()), tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ModelFileError, match="not a safetensors file"):
        load_model(tmp_path / "m")
    save_model(VAE(ModelConfig(latent_dim=3)), tmp_path / "other")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        (tmp_path / "other" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ModelFileError, match="do not fit"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not a minrep model configuration"):
        load_model(tmp_path / "m")


def test_training_range_is_read_from_config_json(tmp_path):
    model = VAE(ModelConfig())
    save_model(model, tmp_path / "none")
    assert load_model(tmp_path / "none").training_range is None  # not recorded
    save_model(model, tmp_path / "null", {"data": {"training_range": None}})
    assert load_model(tmp_path / "null").training_range is None  # data without labels
    grid = {"alpha": [0.5, 1.0], "D": [1e-4, 1e-2]}
    save_model(model, tmp_path / "grid", {"data": {"process": "fbm", "training_range": grid}})
    assert load_model(tmp_path / "grid").training_range == grid
    for bad in ({"alpha": [1.0, 0.5], "D": [1e-4, 1e-2]}, {"alpha": [0.5, 1.0]}):
        save_model(model, tmp_path / "bad", {"data": {"training_range": bad}})
        with pytest.raises(ModelFileError, match="data.training_range must be"):
            load_model(tmp_path / "bad")


@pytest.mark.parametrize("name", sorted(p.name for p in PRETRAINED.iterdir() if p.is_dir()))
def test_shipped_models_record_their_training_range(name):
    recorded = json.loads((PRETRAINED / name / "config.json").read_text())["data"]
    model = load_model(name)
    assert model.training_range == recorded["training_range"]
    lo, hi = model.training_range["alpha"]
    if recorded["process"] == "bm":
        assert (lo, hi) == (1.0, 1.0)  # Brownian motion has alpha = 1
    else:
        assert 0 < lo < hi < 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_model_with_non_finite_weights_is_refused_naming_file_and_tensor(tmp_path, value):
    model = VAE(ModelConfig())
    save_model(model, tmp_path / "m")
    state = load_file(tmp_path / "m" / "model.safetensors")
    name = "decoder.blocks.2.skip.weight"
    state[name][3, 1, 0] = value
    save_file(state, tmp_path / "m" / "model.safetensors")  # as another program might
    weights = tmp_path / "m" / "model.safetensors"
    with pytest.raises(
        ModelFileError, match=re.escape(f"{weights}: tensor '{name}' holds 1 non-finite value")
    ):
        load_model(tmp_path / "m")
    # and a model holding them is not saved (nothing is written)
    with torch.no_grad():
        model.encoder.latent.bias[0] = value
        model.decoder.input.weight[0, 0, 0] = value
    with pytest.raises(
        ModelFileError, match="'encoder.latent.bias' .*, as do 'decoder.input.weight';"
    ):
        save_model(model, tmp_path / "n")
    assert not (tmp_path / "n").exists()


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_model_files_get_the_mode_of_an_ordinary_write(tmp_path):
    old_umask = os.umask(0o022)
    try:
        save_model(VAE(ModelConfig()), tmp_path / "m")
    finally:
        os.umask(old_umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "m").iterdir()}
    assert modes == {"model.safetensors": 0o644, "config.json": 0o644}  # safetensors: 0600
