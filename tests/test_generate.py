"""Tests of minrep.generate: the incremental sampler against a naive reference, and the law of
generated trajectories for decoders whose output law is known."""

import math
import re

import numpy as np
import pytest
import torch

from known_models import known_law_model
from minrep import generate, stats
from minrep.model import FRACTIONAL_ORDER_MAX, FRACTIONAL_TIMESCALES, VAE, ModelConfig


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@torch.no_grad()
def naive_generate(model, z, n_steps, context, noise):
    """Reference sampler (the paper's): re-run the decoder on the whole receptive-field window
    of the last displacements at every step."""
    rf = model.receptive_field
    z = torch.as_tensor(z)
    total = rf + n_steps
    series = torch.zeros(z.shape[0], model.config.dim, total)
    series[..., :rf] = torch.as_tensor(context)
    condition = model.upsampler(z, total)
    log_scale = model.log_scale(z)
    for t in range(rf, total):
        window = series[..., t - rf : t]
        if log_scale is not None:
            window = window * torch.exp(-log_scale)[:, None, None]
        law = model.law(model.decoder(window, condition[..., : t + 1]), log_scale)
        i = t - rf
        uniform = noise["uniform"][..., i : i + 1] if "uniform" in noise else None
        series[..., t] = law.sample(noise["normal"][..., i : i + 1], uniform)[..., 0]
    return series[..., rf:].numpy()


def randomised(config, std=0.3):
    """A model with every weight random (the default start has a zero output layer)."""
    model = VAE(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter) * std)
    return model


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05)),
        ModelConfig(scale_equivariant=False),
        ModelConfig(dim=2, n_mixtures=3, scale_equivariant=True, log_scale_mean=math.log(0.05)),
        ModelConfig.published(),
    ],
    ids=["default", "unscaled-tanh", "2d-mixture", "published"],
)
def test_incremental_equals_naive(config, monkeypatch):
    # Conditioning chunks of 24 steps: several chunk boundaries inside these 112 steps.
    monkeypatch.setattr(generate, "CONDITION_CHUNK", 24)
    # The linear gate does not bound the signal: smaller weights keep the series finite.
    model = randomised(config, std=0.3 if config.gate == "tanh" else 0.1)
    z = torch.randn(3, config.latent_dim)
    context = torch.randn(3, config.dim, model.receptive_field) * 0.05
    noise = generate.draw_noise(model, 3, 80, torch.Generator().manual_seed(1))
    fast = generate.generate(model, z, 80, context=context, noise=noise)
    slow = naive_generate(model, z, 80, context, noise)
    assert fast.shape == (3, config.dim, 80)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6 * np.abs(slow).max())


@torch.no_grad()
def naive_generate_whole(model, z, n_steps, noise):
    """Reference sampler of the "whole" decoder: score the series so far with the model's own
    forward pass (FFT memories, padded window) and sample the next displacement from it."""
    z = torch.as_tensor(z)
    series = torch.zeros(z.shape[0], model.config.dim, n_steps)
    for t in range(n_steps):
        law = model.predict(series[..., : t + 1], z)
        series[..., t] = law.sample(noise["normal"][..., t : t + 1])[..., -1]
    return series.numpy()


@pytest.mark.parametrize(
    "dim, scale_equivariant, log_time, memory, ageing, mean_lags, reads_past",
    [
        (1, True, False, "free", False, 0, True),
        (2, True, False, "free", False, 0, True),
        (2, False, True, "free", True, 0, True),
        (1, True, False, "fractional", True, 0, True),
        (2, False, False, "fractional", False, 0, True),
        (1, True, False, "fractional", True, 8, True),
        (2, True, False, "fractional", True, 8, False),
    ],
)
def test_whole_decoder_incremental_equals_forward(
    dim, scale_equivariant, log_time, memory, ageing, mean_lags, reads_past, monkeypatch
):
    monkeypatch.setattr(generate, "CONDITION_CHUNK", 24)
    config = ModelConfig(
        dim=dim,
        decoder="whole",
        scale_equivariant=scale_equivariant,
        log_scale_mean=math.log(0.05),
        log_time=log_time,
        memory=memory,
        ageing=ageing,
        mean_lags=mean_lags,
        reads_past=reads_past,
        **({"memory_timescales": FRACTIONAL_TIMESCALES} if memory == "fractional" else {}),
    )
    # Weights small enough that the network is not chaotic: float rounding, which differs
    # between the FFT memories and the recursion, would grow along the series.
    model = randomised(config, std=0.12)
    z = torch.randn(3, config.latent_dim)
    noise = generate.draw_noise(model, 3, 60, torch.Generator().manual_seed(1))
    fast = generate.generate(model, z, 60, noise=noise)
    slow = naive_generate_whole(model, z, 60, noise)
    assert np.isfinite(slow).all() and np.abs(slow).max() > 0
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6 * np.abs(slow).max())
    with torch.no_grad():  # the memories take part: without them the series is another
        for part in [model.order_head] if memory == "fractional" else [model.memory_weights.out]:
            part.weight.zero_()
            part.bias.zero_()
    forgetful = generate.generate(model, z, 60, noise=noise)
    assert np.abs(forgetful - fast).max() > 0.01 * np.abs(fast).max()


def test_whole_decoder_takes_no_context():
    model = VAE(ModelConfig(decoder="whole"))
    context = np.zeros((1, 1, model.receptive_field), dtype=np.float32)
    with pytest.raises(generate.GenerationError, match="from nothing"):
        generate.generate(model, np.zeros((1, 6)), 10, context=context, seed=0)


def test_zero_context_seed_and_lengths():
    model = randomised(ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05)))
    z = np.zeros((2, 6), dtype=np.float32)
    a = generate.generate(model, z, 50, seed=3)
    b = generate.generate(model, z, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, generate.generate(model, z, 50, seed=4))
    # No seed: fresh randomness each call, in generate and generate_many alike.
    assert not np.array_equal(generate.generate(model, z, 50), generate.generate(model, z, 50))
    many = [generate.generate_many(model, z, 20) for _ in range(2)]
    assert not np.array_equal(*many)
    zeros = np.zeros((2, 1, model.receptive_field), dtype=np.float32)
    np.testing.assert_array_equal(a, generate.generate(model, z, 50, context=zeros, seed=3))
    assert generate.generate(model, z, 1, seed=0).shape == (2, 1, 1)


def test_generated_white_noise_has_the_set_variance():
    std = 0.02
    model = known_law_model(std)
    x = generate.generate(model, np.zeros((600, 6), np.float32), 400, seed=1)
    variance = x.var()
    # 240,000 Gaussian values: relative standard error sqrt(2 / N) = 0.003; 5 sigma.
    assert abs(variance / std**2 - 1) < 5 * math.sqrt(2 / x.size)
    fitted, _ = stats.fit_power_law(np.arange(1, 10), stats.tea_msd(x, 9))
    assert abs(fitted - 1.0) < 0.02  # Brownian: MSD linear in the lag


def test_generated_ar1_correlation():
    rho, std = 0.5, 0.01
    model = known_law_model(std, correlation=rho)
    x = generate.generate(model, np.zeros((400, 6), np.float32), 300, seed=2)
    c = stats.displacement_autocorrelation(x[..., 50:], 3)
    # AR(1): C(k) = rho^k; with 100,000 values the standard error of C(1) is about 0.003.
    np.testing.assert_allclose(c[1:], rho ** np.arange(1, 4), atol=0.02)


def test_bad_generation_requests():
    model = VAE(ModelConfig())
    with pytest.raises(generate.GenerationError, match="out of range"):
        generate.latents_with_values(model, {6: 1.0}, 3)
    with pytest.raises(generate.GenerationError, match=r"shape \(batch, 6\)"):
        generate.generate(model, np.zeros((2, 5)), 10)
    with pytest.raises(generate.GenerationError, match="receptive field"):
        generate.generate(model, np.zeros((2, 6)), 10, context=np.zeros((2, 1, 10)))
    z = generate.latents_with_values(model, {1: -1.5, 3: 0.3}, 4)
    assert z.shape == (4, 6) and np.all(z[:, 1] == -1.5) and np.all(z[:, [0, 2, 4, 5]] == 0)


def test_generate_command(tmp_path):
    from typer.testing import CliRunner

    from minrep import datasets, io
    from minrep.checkpoint import save_model
    from minrep.cli import app

    save_model(
        randomised(ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05))),
        tmp_path / "m",
    )
    runner = CliRunner()

    def run_generate(out, *options):
        result = runner.invoke(
            app, ["generate", str(tmp_path / "m"), "-o", str(tmp_path / out), *map(str, options)]
        )
        assert result.exit_code == 0, result.output
        return io.load_npz(tmp_path / out)

    # --length is positions T, as in simulate: T - 1 displacements.
    a = run_generate("a.npz", "--z", "0=-1.5,1=0.3", "--n", "4", "--length", "40")
    assert a.displacements.shape == (4, 1, 39)
    assert np.all(a.labels["z_0"] == -1.5) and np.all(a.labels["z_2"] == 0)
    # The default: T = 400 positions, the paper's length (399 displacements).
    assert run_generate("d.npz", "--z", "0=1").displacements.shape == (1, 1, 399)
    s = run_generate("s.npz", "--sweep", "1=-4:4:5", "--n-per-value", "3", "--length", "40")
    np.testing.assert_allclose(np.unique(s.labels["z_1"]), np.linspace(-4, 4, 5))
    # Without --seed, fresh randomness each run, and the seed drawn is recorded: given back,
    # it reproduces the file.
    b = run_generate("b.npz", "--z", "0=-1.5,1=0.3", "--n", "4", "--length", "40")
    assert not np.array_equal(a.displacements, b.displacements)
    assert isinstance(b.meta["seed"], int) and b.meta["seed"] != a.meta["seed"]
    again = run_generate(
        "c.npz", "--z", "0=-1.5,1=0.3", "--n", "4", "--length", "40", "--seed", b.meta["seed"]
    )
    assert again.displacements.tobytes() == b.displacements.tobytes()
    data = datasets.make_dataset("fbm", alpha=(0.5,), D=(1e-3,), n_per_cell=3, n_positions=60)
    source = io.save_npz(data, tmp_path / "in.npz")
    f = run_generate(
        "f.npz", "--from", str(source), "--n", "2", "--context", "start", "--length", "30"
    )
    assert len(f) == 6 and np.all(f.alpha == 0.5)  # the inputs' labels come along
    assert f.displacements.shape == (6, 1, 29)
    for args, message in [
        (["--z", "7=1"], "out of range"),
        (["--sweep", "1=-4:4"], "index=start:stop:count"),
        (["--z", "1=1", "--context", "start"], "together with --from"),
        (["--z", "1=1", "--sweep", "0=1:2:3"], "exactly one of"),
        (["--z", "1=1", "--length", "1"], "--length (positions T) must be >= 2"),
    ]:
        result = runner.invoke(
            app, ["generate", str(tmp_path / "m"), "-o", str(tmp_path / "x.npz"), *args]
        )
        assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (np.nan, "row 3, latent 2 = nan is not a finite number"),
        (-np.inf, "row 3, latent 2 = -inf is not a finite number"),
        (1e39, "row 3, latent 2 = 1e+39 is too large for float32"),
        (1e30, "row 3 (z = 0, 0, 1e+30, 0, 0, 0) puts the model's displacement scale at exp("),
    ],
)
def test_latents_not_finite_or_overflowing_are_refused_before_any_generation(
    value, reason, monkeypatch
):
    model = randomised(ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05)))
    runs = []
    monkeypatch.setattr(generate.FastDecoder, "run", lambda *args, **kw: runs.append(1))
    z = np.zeros((5, 6))
    z[3, 2] = value
    z[4, 2] = value
    with pytest.raises(generate.GenerationError, match=re.escape(reason)):
        generate.generate_many(model, z, 20, seed=0, batch_size=2)
    with pytest.raises(generate.GenerationError, match=re.escape("(2 rows: 3, 4)")):
        generate.generate(model, z, 20, seed=0)
    assert runs == []  # refused before the first batch


def test_generated_displacements_that_are_not_finite_are_refused_naming_the_rows(monkeypatch):
    model = randomised(ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05)))
    z = np.random.default_rng(0).normal(size=(7, 6))
    real_run = generate.FastDecoder.run

    def run(self, z_batch, context, noise, progress=False):
        out = real_run(self, z_batch, context, noise, progress)
        if len(z_batch) == 3 and torch.equal(z_batch[0], torch.from_numpy(z[3]).float()):
            out[1, 0, 5] = float("nan")  # second batch, its second row: row 4 of z
        return out

    monkeypatch.setattr(generate.FastDecoder, "run", run)
    with pytest.raises(
        generate.GenerationError, match=re.escape("generation from latent row 4 (z = ")
    ):
        generate.generate_many(model, z, 20, seed=0, batch_size=3)
    monkeypatch.setattr(generate.FastDecoder, "run", real_run)
    assert np.isfinite(generate.generate_many(model, z, 20, seed=0, batch_size=3)).all()
    # A model with a NaN weight generates NaN from any latent: refused, every row named.
    with torch.no_grad():
        model.decoder.head_out.bias[0] = float("nan")
    with pytest.raises(generate.GenerationError, match=r"row 0 .* \(7 rows: 0, 1, 2, 3, 4 and 2"):
        generate.generate(model, z, 20, seed=0)


def test_generated_set_and_context_must_be_finite():
    model = VAE(ModelConfig())
    z = np.zeros((3, 6), np.float32)
    dx = np.zeros((3, 1, 40), np.float32)
    dx[2, 0, 7] = np.inf
    with pytest.raises(generate.GenerationError, match="latent row 2 .* not finite"):
        generate.generated_set(dx, z, {})
    dx[2, 0, 7] = 0.0
    assert len(generate.generated_set(dx, z, {})) == 3
    context = np.zeros((3, 1, model.receptive_field))
    context[1, 0, 0] = np.nan
    with pytest.raises(generate.GenerationError, match="context row 1 holds displacements"):
        generate.generate(model, z, 10, context=context)


@pytest.mark.parametrize("value", ["nan", "1e30", "-inf"])
def test_the_generate_command_writes_nothing_from_absurd_latents(tmp_path, value):
    from typer.testing import CliRunner

    from minrep.checkpoint import save_model
    from minrep.cli import app

    save_model(
        randomised(ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.05))),
        tmp_path / "m",
    )
    out = tmp_path / "x.npz"
    result = CliRunner().invoke(
        app, ["generate", str(tmp_path / "m"), "-o", str(out), "--z", f"0={value}"]
    )
    assert result.exit_code == 2 and not out.exists(), result.output
    assert "Traceback" not in result.output and "z" in result.output


@pytest.mark.parametrize("d", [-0.3, 0.3])
def test_fractional_memory_keeps_the_exponent_far_beyond_the_receptive_field(d):
    """With a short-memory part that is white noise, the ``"fractional"`` decoder generates
    ARFIMA(0, d, 0), whose MSD grows as lag^(1 + 2d) at long lags: the memory of the whole
    past survives 6,000 steps. Measured over seeds 0-2 at lags 100-1000: 0.378-0.417 for
    d = -0.3, 1.549-1.604 for d = 0.3 (finite-lag bias and spread both under 0.05)."""
    config = ModelConfig(
        decoder="whole",
        scale_equivariant=True,
        memory="fractional",
        memory_timescales=FRACTIONAL_TIMESCALES,
    )
    model = VAE(config).eval()  # zero head: coefficients 0, one sigma
    with torch.no_grad():
        model.order_head.bias.fill_(math.atanh(d / FRACTIONAL_ORDER_MAX))
    x = generate.generate(model, torch.zeros(40, config.latent_dim), 6000, seed=0)
    lags = np.arange(100, 1001)
    msd = stats.ta_msd(x, 1000)[:, 99:].mean(0)
    exponent = np.polyfit(np.log(lags), np.log(msd), 1)[0]
    assert abs(exponent - (1 + 2 * d)) < 0.1
