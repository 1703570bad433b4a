"""Tests of minrep.model: architecture, causality, loss, initialisation and the configuration
(the safetensors round trip is in test_checkpoint.py)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minrep.model import (
    FRACTIONAL_ORDER_MAX,
    FRACTIONAL_TIMESCALES,
    VAE,
    ModelConfig,
    Prediction,
    ageing_log_scale,
    early_log_mean_squares,
    exponential_memories,
    fractional_coefficients,
    invariant_features,
    kl_to_prior,
    latent_covariance,
    time_features,
)


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_paper_shapes_and_receptive_field():
    config = ModelConfig()
    assert config.receptive_field == 32  # causal kernel 2 + 2 * (1 + 2 + 4 + 8)
    assert config.min_steps == 33
    model = VAE(config)
    x = torch.randn(4, 1, 399) * 0.1
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 6)
    condition = model.upsampler(mu, 399)
    assert condition.shape == (4, 6, 399)  # Table I: B x |z| x (T - 1)
    prediction = model.predict(x, mu)
    assert prediction.mean.shape == (4, 1, 1, 399 - 32)  # 367 predictions for T = 400
    out = model(x)
    assert out["nll"].shape == (4,) and out["kl"].shape == (4, 6)


def test_encoder_layer_sizes_follow_table_one():
    model = VAE(ModelConfig(scale_equivariant=False))
    assert [c.out_channels for c in model.encoder.convs] == [16] * 4
    linear = [m for m in model.encoder.mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(512, 200), (200, 100)]
    assert model.encoder.latent.out_features == 12
    up = [m for m in model.upsampler.mlp if isinstance(m, nn.Linear)]
    assert [m.out_features for m in up] == [100, 200, 512]
    assert VAE(ModelConfig()).encoder.mlp[0].in_features == 512  # the paper's network
    equivariant = VAE(ModelConfig(scale_equivariant=True))
    assert equivariant.encoder.mlp[0].in_features == 513  # + centred log scale
    whole = VAE(ModelConfig.whole_trajectory())
    assert whole.encoder.mlp[0].in_features == 513 + 1  # + log length
    early = VAE(ModelConfig.whole_trajectory(early_bins=6))
    assert early.encoder.mlp[0].in_features == 513 + 1 + 6  # + the early mean squares


def test_early_log_mean_squares():
    """Steps [0], [1], [2, 4), [4, 8) of a 2D track by hand; a bin past the end is 0; an exact
    zero step stays finite; rotating the track changes nothing."""
    x = torch.zeros(1, 2, 6, dtype=torch.float64)
    x[0, :, 0] = torch.tensor([3.0, 4.0])  # |x|^2 = 25
    x[0, 0, 2:4] = torch.tensor([1.0, 2.0])  # steps 2, 3: |x|^2 = 1, 4; step 1 is zero
    x[0, 1, 4:6] = torch.tensor([2.0, 2.0])  # steps 4, 5
    got = early_log_mean_squares(x, 5)[0]
    per_coordinate = torch.tensor([25 / 2, 0.0, 2.5 / 2, 4 / 2], dtype=torch.float64)
    expected = torch.log(per_coordinate + 1e-6)
    torch.testing.assert_close(got[:4], expected)
    assert got[4] == 0.0  # steps [8, 16) are past the end of 6 steps
    assert got[1] == pytest.approx(math.log(1e-6))
    angle = 0.7
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
        dtype=torch.float64,
    )
    rotated = torch.einsum("ij,bjt->bit", rotation, x)
    kept = [0, 2, 3, 4]  # step 1 is zero either way
    torch.testing.assert_close(early_log_mean_squares(rotated, 5)[0][kept], got[kept])


@pytest.mark.parametrize("scale_equivariant", [True, False])
def test_prediction_is_causal(scale_equivariant):
    """Changing displacement t changes no prediction of displacements <= t, and changes some
    prediction within the receptive field after it."""
    model = VAE(ModelConfig(scale_equivariant=scale_equivariant)).double()
    nn.init.normal_(model.decoder.head_out.weight, std=0.1)  # zero at start when equivariant
    x = torch.randn(1, 1, 120, dtype=torch.float64)
    z = torch.randn(1, 6, dtype=torch.float64)  # fixed latent: the encoder is not causal
    rf = model.receptive_field
    base = model.predict(x, z)
    t = 70
    changed = x.clone()
    changed[..., t] += 1.0
    other = model.predict(changed, z)
    # Column j predicts displacement j + rf.
    predicted = torch.arange(rf, 120)
    diff = (other.mean - base.mean).abs()[0, 0, 0] + (other.log_sigma - base.log_sigma).abs()[
        0, 0, 0
    ]
    assert diff[predicted <= t].max() == 0
    assert (diff[(predicted > t) & (predicted <= t + rf)] > 0).all()  # the whole field
    assert diff[predicted > t + rf].max() == 0  # nothing beyond the receptive field


def test_length_independent_and_minimum_length():
    model = VAE(ModelConfig(dim=2))
    for length in (33, 50, 1000):
        out = model(torch.randn(3, 2, length))
        assert torch.isfinite(out["nll"]).all()
    with pytest.raises(ValueError, match="at least 33 displacements"):
        model(torch.randn(3, 2, 32))
    with pytest.raises(ValueError, match=r"\(batch, 2, L\)"):
        model(torch.randn(3, 1, 50))


def whole_model(dim: int = 1, memory: str = "free") -> VAE:
    """A "whole"-decoder model in float64 with every output weight non-zero (the memory
    weights or the fractional order and, when scale-equivariant, the head start at zero)."""
    timescales = {"memory_timescales": FRACTIONAL_TIMESCALES} if memory == "fractional" else {}
    config = ModelConfig(
        dim=dim, decoder="whole", scale_equivariant=True, memory=memory, **timescales
    )
    model = VAE(config).double()
    nn.init.normal_(model.decoder.head_out.weight, std=0.1)
    if memory == "fractional":
        nn.init.normal_(model.order_head.weight, std=0.3)
    else:
        nn.init.normal_(model.memory_weights.out.weight, std=0.3)
    return model


def test_fractional_coefficients_invert_each_other():
    """``(1 - B)^d (1 - B)^-d = 1``: the series of d and -d convolve to a unit impulse; the
    first terms are the binomial series ``-d, -d (1 - d) / 2``."""
    d = torch.tensor([-0.45, -0.2, 0.0, 0.3, 0.49], dtype=torch.float64)
    pi = F.pad(fractional_coefficients(d, 200), (1, 0), value=1.0)
    inverse = F.pad(fractional_coefficients(-d, 200), (1, 0), value=1.0)
    impulse = np.zeros(201)
    impulse[0] = 1
    for a, b in zip(pi.numpy(), inverse.numpy(), strict=True):
        np.testing.assert_allclose(np.convolve(a, b)[:201], impulse, atol=1e-12)
    torch.testing.assert_close(pi[:, 1], -d)
    torch.testing.assert_close(pi[:, 2], -d * (1 - d) / 2)


@pytest.mark.parametrize("d", [-0.45, -0.2, 0.25, 0.45])
def test_fractional_memory_is_the_fractional_difference_over_the_whole_past(d):
    """``VAE.fractional_memory`` is ``sum_(j >= 1) pi_j x_(t-j)`` over every earlier step: exact
    up to the receptive field, the tail from the delayed memories within the table's fit (a
    few % of each coefficient, far less of the sum over a random past)."""
    model = whole_model(memory="fractional")
    with torch.no_grad():  # the order d for every latent
        model.order_head.weight.zero_()
        model.order_head.bias.fill_(math.atanh(d / FRACTIONAL_ORDER_MAX))
    x = torch.randn(2, 1, 3000, dtype=torch.float64)
    z = torch.randn(2, 6, dtype=torch.float64)
    memory = model.fractional_memory(x, z)[:, 0].double()
    pi = fractional_coefficients(torch.tensor([d], dtype=torch.float64), 3000)[0]
    exact = torch.stack([(x[:, 0, :t].flip(1) * pi[:t]).sum(1) for t in range(3000)], dim=1)
    rf = model.receptive_field
    torch.testing.assert_close(memory[:, : rf + 1], exact[:, : rf + 1], rtol=0, atol=1e-6)
    tail = exact - torch.stack(
        [(x[:, 0, max(t - rf, 0) : t].flip(1) * pi[: min(t, rf)]).sum(1) for t in range(3000)], 1
    )
    error = (memory - exact)[:, rf + 1 :]
    # Measured: at most 0.13 % of the tail's largest value, 0.10 % of its RMS (d = -0.2).
    assert error.abs().max() < 0.005 * tail[:, rf + 1 :].abs().max()
    assert error.pow(2).mean().sqrt() < 0.003 * tail[:, rf + 1 :].pow(2).mean().sqrt()


def test_exponential_memories_equal_the_recursion():
    timescales = (1.5, 8.0, 300.0)
    x = torch.randn(2, 3, 500, dtype=torch.float64)
    memories = exponential_memories(x, timescales)
    assert memories.shape == (2, 3, 3, 500)
    for k, tau in enumerate(timescales):
        a = math.exp(-1 / tau)
        m = torch.zeros(2, 3, dtype=torch.float64)
        for t in range(500):  # m(t) = a m(t - 1) + (1 - a) x(t - 1), m(0) = 0
            torch.testing.assert_close(memories[:, :, k, t], m, rtol=0, atol=1e-12)
            m = a * m + (1 - a) * x[..., t]


def test_time_features_are_the_weight_the_observed_past_fills():
    times = torch.arange(-5, 3000)
    features = time_features(times, (4.0, 1024.0))
    assert (features[:, times <= 0] == 0).all()
    # A memory of a series of ones is 1 - a^t: what the feature says.
    ones = torch.ones(1, 1, 3000, dtype=torch.float64)
    filled = exponential_memories(ones, (4.0, 1024.0))[0, 0]
    torch.testing.assert_close(features[:, 5:].double(), filled, rtol=0, atol=1e-6)
    assert features.max() <= 1 and features[0, -1] > 0.999 and features[1, -1] < 0.95


def test_log_time_feature_is_log_one_plus_t_held_at_the_horizon():
    config = ModelConfig(decoder="whole", log_time=True, time_horizon=100)
    code = VAE(config).latent_code
    times = torch.arange(-3, 300)
    condition = code(torch.zeros(1, config.latent_dim), times)
    assert condition.features.shape == (len(config.memory_timescales) + 1, len(times))
    expected = torch.log1p(times.clamp(0, 100).double()) / math.log(1025.0)
    torch.testing.assert_close(condition.features[-1].double(), expected, rtol=0, atol=1e-6)
    assert config.condition_channels == config.upsample_channels + len(config.memory_timescales) + 1
    with pytest.raises(ValueError, match="log_time is a time feature of the 'whole' decoder"):
        ModelConfig(log_time=True)


@pytest.mark.parametrize("memory", ["free", "fractional"])
def test_whole_decoder_predicts_every_step_causally(memory):
    """The law of displacement t depends on displacements before t only, all of them (through
    the memories, far beyond the receptive field), and the first on the latent alone."""
    model = whole_model(memory=memory)
    assert model.config.first_predicted_step == 0 and model.config.min_steps == 9
    x = torch.randn(1, 1, 400, dtype=torch.float64)
    z = torch.randn(1, 6, dtype=torch.float64)
    base = model.predict(x, z)
    assert base.mean.shape == (1, 1, 1, 400)  # every displacement
    t = 70
    changed = x.clone()
    changed[..., t] += 1.0
    other = model.predict(changed, z)
    diff = ((other.mean - base.mean).abs() + (other.log_sigma - base.log_sigma).abs())[0, 0, 0]
    # The memories are computed by FFT: rounding reaches every step, at 1e-15 in float64.
    assert diff[: t + 1].max() < 1e-12
    assert (diff[t + 1 :] > 1e-6).all()  # every later step: memory of the whole past
    empty = model.predict(torch.zeros_like(x), z)  # the first step sees no displacement
    torch.testing.assert_close(empty.mean[..., 0], base.mean[..., 0])


@pytest.mark.parametrize("memory", ["free", "fractional"])
def test_whole_decoder_law_does_not_depend_on_the_length(memory):
    """The law of the first n displacements is the same in a trajectory of any length: the
    conditioning depends on the latent and the time, not on L (unlike the paper's upsampler)."""
    model = whole_model(dim=2, memory=memory)
    x = torch.randn(3, 2, 600, dtype=torch.float64)
    z = torch.randn(3, 6, dtype=torch.float64)
    full = model.predict(x, z)
    for n in (10, 33, 250):
        part = model.predict(x[..., :n], z)
        torch.testing.assert_close(part.mean, full.mean[..., :n], rtol=0, atol=1e-10)
        torch.testing.assert_close(part.log_sigma, full.log_sigma[..., :n], rtol=0, atol=1e-10)
    out = model(x[..., :9])  # the shortest a whole-decoder model takes
    assert torch.isfinite(out["nll"]).all()
    with pytest.raises(ValueError, match="at least 9 displacements"):
        model(x[..., :8])


@pytest.mark.parametrize("dim, memory", [(1, "free"), (2, "free"), (3, "free"), (2, "fractional")])
def test_whole_decoder_law_is_symmetric_by_construction(dim, memory):
    """Mirrored (x -> -x) or, in 2D and 3D, rotated and reflected, the past gives the mirrored
    or rotated law: every weight and bias random, so this holds by construction."""
    model = whole_model(dim, memory)
    for parameter in model.decoder.parameters():
        nn.init.normal_(parameter, std=0.3)
    x = torch.randn(3, dim, 80, dtype=torch.float64)
    z = torch.randn(3, 6, dtype=torch.float64)
    law = model.predict(x, z)
    assert law.mean.abs().max() > 0.01 and law.mean[..., 0].abs().max() < 1e-12  # 0 at start
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))  # det +-1
    for transform in (-torch.eye(dim, dtype=torch.float64), rotation):
        moved = model.predict(torch.einsum("ij,bjt->bit", transform, x), z)
        expected = torch.einsum("ij,bjkt->bikt", transform, law.mean)
        torch.testing.assert_close(moved.mean, expected)
        torch.testing.assert_close(moved.log_sigma, law.log_sigma)


def test_invariant_features():
    x = torch.tensor([[[3.0, -1.0, 0.0, 2.0], [4.0, 0.0, 0.0, 1.0]]])  # (1, 2, 4)
    expected = [[5.0, 1.0, 0.0, 5**0.5], [0.0, -3 / 5, 0.0, 0.0]]
    torch.testing.assert_close(invariant_features(x)[0], torch.tensor(expected))
    x1 = torch.tensor([[[0.5, -2.0, -1.0, 3.0]]])  # 1D: the sign of each step relative to the last
    torch.testing.assert_close(
        invariant_features(x1)[0], torch.tensor([[0.5, 2.0, 1.0, 3.0], [0.0, -2.0, 1.0, -3.0]])
    )


def test_a_decoder_that_does_not_read_the_past_has_the_form_of_a_gaussian_law():
    """``reads_past=False``: log sigma does not depend on the past's values and the mean is
    linear in them (its coefficients are functions of the latent and the time), whatever the
    weights; with ``reads_past`` the same weights give neither."""
    results = {}
    for reads_past in (False, True):
        torch.manual_seed(3)
        model = VAE(ModelConfig.whole_trajectory(dim=2, reads_past=reads_past)).double()
        for p in model.decoder.parameters():
            nn.init.normal_(p, std=0.3)
        nn.init.normal_(model.order_head.weight, std=0.3)
        z = torch.randn(2, 6, dtype=torch.float64)
        x1, x2 = (torch.randn(2, 2, 50, dtype=torch.float64) for _ in range(2))
        laws = [model.predict(x, z) for x in (x1, x2, x1 + x2)]
        same_sigma = torch.allclose(laws[0].log_sigma, laws[1].log_sigma)
        linear = torch.allclose(laws[2].mean, laws[0].mean + laws[1].mean, atol=1e-12)
        results[reads_past] = (same_sigma, linear)
    assert results[False] == (True, True)
    assert results[True] == (False, False)


def test_mean_lags_shorten_the_mean_window():
    """``mean_lags`` w: the head gives log sigma and w coefficients, the mean is their
    combination of the w last steps: with constant coefficients (the head's weights 0, its
    bias random) and d = 0, a step w + 1 or more before t does not move the mean of t, and a
    step j <= w before it moves it by its coefficient."""
    model = VAE(ModelConfig.whole_trajectory(mean_lags=8)).double()
    assert model.decoder.head_out.out_channels == 9
    nn.init.normal_(model.decoder.head_out.bias, std=0.3)  # weights 0, order_head 0: d = 0
    coefficients = model.decoder.head_out.bias.detach()[1:]  # oldest (lag 8) first
    x = torch.randn(1, 1, 100, dtype=torch.float64)
    z = torch.randn(1, 6, dtype=torch.float64)
    base = model.predict(x, z).mean[0, 0, 0, 60]
    for lag in (1, 3, 8, 9, 20):
        changed = x.clone()
        changed[..., 60 - lag] += 1.0
        moved = model.predict(changed, z).mean[0, 0, 0, 60] - base
        expected = coefficients[8 - lag] if lag <= 8 else 0.0
        torch.testing.assert_close(moved, torch.as_tensor(expected).double(), atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="mean_lags must be in 0 .. 32"):
        ModelConfig.whole_trajectory(mean_lags=33)
    with pytest.raises(ValueError, match="belong to the 'whole' decoder"):
        ModelConfig(mean_lags=4)


def test_ageing_log_scale_is_half_the_log_of_the_sbm_increment():
    a = torch.tensor([0.05, 0.5, 1.0, 1.7, 4.0], dtype=torch.float64, requires_grad=True)
    t = torch.arange(0, 5000)
    term = ageing_log_scale(a, t)
    naive = 0.5 * torch.log((t + 1.0) ** a[:, None] - t.double() ** a[:, None])
    torch.testing.assert_close(term, naive, rtol=1e-9, atol=1e-12)
    assert term[2].abs().max() < 1e-12  # a = 1: no ageing (to rounding)
    term.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_ageing_gives_the_exact_law_of_sbm():
    """With its head at zero (no memory, one sigma), the scale from the latent at sqrt(2 D)
    and the ageing exponent at alpha, the "whole" decoder is SBM: its NLL is the exact one."""
    from minrep import processes

    config = ModelConfig(decoder="whole", scale_equivariant=True, ageing=True)
    model = VAE(config).double()
    alpha, D = 0.4, 3e-3
    with torch.no_grad():
        model.scale_head.bias.fill_(0.5 * math.log(2 * D))
        model.ageing_head.bias.fill_(math.log(alpha))
    x = processes.simulate("sbm", alpha, D, n_steps=300, n=4, seed=1, dtype=np.float64)
    nll = model(torch.as_tensor(x), sample=False)["nll"]
    exact = processes.exact_nll(x, "sbm", alpha, D, start=0)
    np.testing.assert_allclose(nll.detach().numpy(), exact, rtol=1e-10)


def test_whole_decoder_conditions_times_after_its_horizon_as_the_horizon():
    model = whole_model()
    model.latent_code.horizon = 50
    z = torch.randn(2, 6, dtype=torch.float64)
    condition = model.condition_at(z, torch.arange(0, 200))
    assert (condition.features[:, 50:] == condition.features[:, 50:51]).all()
    assert (condition.features[:, 49] < condition.features[:, 50]).all()


def test_whole_decoder_starts_as_brownian_motion_at_the_training_scale():
    """At initialisation (zero head and memory weights, scale-equivariant) every displacement,
    the first included, is N(0, s^2) with the training set's mean scale s."""
    config = ModelConfig(decoder="whole", scale_equivariant=True, log_scale_mean=math.log(0.05))
    model = VAE(config)
    x = torch.randn(4, 1, 50) * 0.05
    out = model(x, sample=False)
    expected = (0.5 * math.log(2 * math.pi) + math.log(0.05) + x**2 / (2 * 0.05**2)).mean((1, 2))
    torch.testing.assert_close(out["nll"], expected, rtol=1e-5, atol=1e-5)


def test_loss_equals_a_hand_computation():
    model = VAE(ModelConfig(n_mixtures=1))
    nn.init.normal_(model.decoder.head_out.weight, std=0.3)  # non-trivial mean and sigma
    x = torch.randn(5, 1, 80) * 0.05
    torch.manual_seed(1)
    loss, terms = model.loss(x, beta=0.01)
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    p = model.predict(x, z)
    target = x[..., 32:]
    sigma = p.log_sigma[:, :, 0].exp()
    nll = (
        0.5 * math.log(2 * math.pi) + sigma.log() + (target - p.mean[:, :, 0]) ** 2 / (2 * sigma**2)
    )
    kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).sum(1).mean()
    expected = nll.mean() + 0.01 * kl
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["nll"], nll.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["kl_per_latent"].sum(), kl, rtol=1e-5, atol=1e-6)

    # A prefix weighs each of its 48 predicted steps as one of a whole trajectory's 367.
    torch.manual_seed(1)
    cropped, _ = model.loss(x, beta=0.01, reference_steps=367)
    expected_cropped = nll.sum(-1).mean() / 367 + 0.01 * kl  # summed over the steps
    torch.testing.assert_close(cropped, expected_cropped, rtol=1e-5, atol=1e-6)

    torch.manual_seed(1)
    with_penalty, _ = model.loss(x, beta=0.01, decorrelation=0.5)
    centred = mu - mu.mean(0)
    covariance = centred.T @ centred / (len(mu) - 1)
    off_diagonal = covariance - torch.diag(covariance.diagonal())
    expected_penalty = 0.5 * off_diagonal.pow(2).sum() / 2  # each pair once
    torch.testing.assert_close(with_penalty, expected + expected_penalty, rtol=1e-5, atol=1e-6)


def test_latent_covariance_sees_a_split_parameter_only():
    generator = torch.Generator().manual_seed(0)
    parameter = torch.randn(4096, generator=generator)
    other = torch.randn(4096, generator=generator)
    # One parameter copied into two latents: the penalty is its variance squared (exactly 1
    # after standardising), whatever the other latents do.
    split = torch.stack([parameter, parameter, torch.zeros(4096) + 3.0], dim=1)
    split[:, 0] = (split[:, 0] - split[:, 0].mean()) / split[:, 0].std()
    split[:, 1] = split[:, 0]
    torch.testing.assert_close(latent_covariance(split), torch.tensor(1.0))
    # Independent parameters: the covariance estimate of n samples has spread 1 / sqrt(n).
    independent = torch.stack([parameter, other], dim=1)
    assert latent_covariance(independent) < (4 / math.sqrt(4096)) ** 2
    # A shift of the means changes nothing.
    torch.testing.assert_close(latent_covariance(split + 5.0), latent_covariance(split))


def test_collapsed_latents_have_the_prior_as_posterior_and_the_others_are_untouched():
    torch.manual_seed(0)
    model = VAE(ModelConfig())
    x = torch.randn(8, 1, 100)
    mu, logvar = model.encode(x)
    assert model.collapse_latents([1, 4]) == [1, 4, 7, 10]
    mu_after, logvar_after = model.encode(x)
    assert (mu_after[:, [1, 4]] == 0).all() and (logvar_after[:, [1, 4]] == 0).all()
    assert (kl_to_prior(mu_after, logvar_after)[:, [1, 4]] == 0).all()
    kept = [0, 2, 3, 5]
    torch.testing.assert_close(mu_after[:, kept], mu[:, kept], rtol=0, atol=0)
    torch.testing.assert_close(logvar_after[:, kept], logvar[:, kept], rtol=0, atol=0)


def test_mixture_log_prob_is_a_normalised_mixture():
    mean = torch.tensor([[[[0.0], [1.0]]]])  # (1, 1, K=2, 1)
    log_sigma = torch.log(torch.tensor([[[[0.5], [2.0]]]]))
    log_weight = torch.log(torch.tensor([[[[0.3], [0.7]]]]))
    prediction = Prediction(mean, log_sigma, log_weight)
    x = torch.linspace(-30, 30, 20001)
    density = torch.stack([prediction.log_prob(v.view(1, 1, 1)).exp() for v in x[::100]])
    value = prediction.log_prob(torch.tensor([[[0.4]]])).exp().item()
    normal = torch.distributions.Normal
    expected = (
        0.3 * normal(0.0, 0.5).log_prob(torch.tensor(0.4)).exp()
        + 0.7 * normal(1.0, 2.0).log_prob(torch.tensor(0.4)).exp()
    )
    assert value == pytest.approx(expected.item(), rel=1e-6)
    assert density.sum().item() * (x[100] - x[0]).item() == pytest.approx(1.0, rel=1e-3)
    model = VAE(ModelConfig(n_mixtures=3))
    out = model(torch.randn(2, 1, 60))
    assert torch.isfinite(out["nll"]).all()


def test_paper_initialisation():
    model = VAE(ModelConfig(scale_equivariant=False))
    latent = model.encoder.latent
    assert torch.all(latent.weight[6:] == 0) and torch.all(latent.bias == 0)
    conv = model.decoder.blocks[2].filter_gate
    fan_out = conv.out_channels * conv.kernel_size[0]
    # Kaiming normal, fan_out, ReLU gain: std sqrt(2 / fan_out); the sample std of 1,536
    # weights scatters by 1 / sqrt(2 * 1536) = 1.8 %: 10 % is over 5 standard deviations.
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.1)
    assert torch.all(conv.bias == 0)
    out = model.decoder.head_out
    bound = 2 / math.sqrt(out.in_channels)  # truncated at two standard deviations
    assert out.weight.abs().max() <= bound
    x = torch.randn(8, 1, 100)
    _, logvar = model.encode(x)
    assert torch.all(logvar == 0)  # posterior starts at unit variance, no overflow


def test_scale_equivariant_start_is_brownian_at_the_mean_scale():
    config = ModelConfig(scale_equivariant=True, log_scale_mean=math.log(0.03))
    model = VAE(config)
    x = torch.randn(4, 1, 100)
    prediction = model.predict(x, torch.randn(4, 6))
    assert torch.all(prediction.mean == 0)
    torch.testing.assert_close(
        prediction.log_sigma, torch.full_like(prediction.log_sigma, math.log(0.03))
    )


def test_scale_equivariant_prediction_commutes_with_scaling():
    """With the latent fixed, scaling the input by c and the predicted scale by c scales the
    predicted mean by c and shifts log sigma by log c."""
    model = VAE(ModelConfig(scale_equivariant=True)).double()
    nn.init.normal_(model.decoder.head_out.weight, std=0.1)  # zero at start: would hide it
    x = torch.randn(2, 1, 90, dtype=torch.float64)
    z = torch.randn(2, 6, dtype=torch.float64)
    base = model.predict(x, z)
    c = 7.5
    with torch.no_grad():
        model.scale_head.bias += math.log(c)
    scaled = model.predict(c * x, z)
    torch.testing.assert_close(scaled.mean, c * base.mean)
    torch.testing.assert_close(scaled.log_sigma, base.log_sigma + math.log(c))


def test_log_sigma_floor():
    model = VAE(ModelConfig(scale_equivariant=True, log_scale_mean=-50.0))
    prediction = model.predict(torch.randn(2, 1, 60) * 1e-20, torch.zeros(2, 6))
    assert prediction.log_sigma.min().item() == pytest.approx(-12.0)


def test_config_json_round_trip_and_unknown_keys():
    config = ModelConfig(latent_dim=4, dilations=(1, 2), n_mixtures=2)
    again = ModelConfig.from_dict(json.loads(config.to_json()))
    assert again == config
    with pytest.raises(ValueError, match="unknown model configuration keys: bogus"):
        ModelConfig.from_dict({"bogus": 1})


def test_conditioning_column_t_conditions_displacement_t():
    """Perturbing column t of the upsampled latent changes the law of displacement t and of no
    earlier displacement."""
    model = VAE(ModelConfig()).double()
    x = torch.randn(1, 1, 120, dtype=torch.float64)
    condition = torch.rand(1, 6, 120, dtype=torch.float64)
    base = model.decoder(x[..., :-1], condition)
    t = 80
    changed = condition.clone()
    changed[..., t] += 1.0
    diff = (model.decoder(x[..., :-1], changed) - base).abs().sum(dim=1)[0]
    predicted = torch.arange(model.receptive_field, 120)
    assert diff[predicted == t].item() > 0
    assert diff[predicted < t].max().item() == 0


def published_wavenet(decoder, x, condition):
    """The WaveNet of the paper's published code written out from its description: input and
    causal convolutions; per block a dilated convolution plus a bias-free conditioning term, a
    linear gate f sigmoid(g), a skip output, and a residual stream updated as
    (h + (h + res(gated))) sqrt(1/2); the skip sum scaled by sqrt(1/n_blocks); the head."""
    h = F.conv1d(F.conv1d(x, decoder.input.weight, decoder.input.bias), decoder.causal.weight)
    h = h + decoder.causal.bias[:, None]
    skips = 0.0
    for block in decoder.blocks:
        pre = F.conv1d(h, block.filter_gate.weight, block.filter_gate.bias, dilation=block.dilation)
        n = pre.shape[-1]
        pre = pre + F.conv1d(condition[..., -n:], block.condition.weight)
        f, g = pre.chunk(2, dim=1)
        gated = f * torch.sigmoid(g)
        skip = F.conv1d(gated, block.skip.weight, block.skip.bias)
        skips = skip if isinstance(skips, float) else skips[..., -n:] + skip
        if block.residual is not None:
            inner = h[..., -n:] + F.conv1d(gated, block.residual.weight, block.residual.bias)
            h = (h[..., -n:] + inner) * math.sqrt(0.5)
    skips = skips * math.sqrt(1 / len(decoder.blocks))
    hidden = F.conv1d(F.relu(skips), decoder.head_hidden.weight, decoder.head_hidden.bias)
    return F.conv1d(F.relu(hidden), decoder.head_out.weight, decoder.head_out.bias)


def test_published_network_computes_the_published_formula():
    model = VAE(ModelConfig.published()).double()
    assert all(block.condition.bias is None for block in model.decoder.blocks)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    x = torch.randn(2, 1, 90, dtype=torch.float64)
    condition = torch.randn(2, 6, 90, dtype=torch.float64)
    expected = published_wavenet(model.decoder, x[..., :-1], condition)
    torch.testing.assert_close(model.decoder(x[..., :-1], condition), expected)
    # minrep's gate differs: the same weights give another function.
    tanh_gate = VAE(dataclasses.replace(model.config, gate="tanh")).double()
    tanh_gate.load_state_dict(model.state_dict())
    assert not torch.allclose(tanh_gate.decoder(x[..., :-1], condition), expected)


def test_published_output_initialisation():
    """The published code draws the last layer from N(0, 2 / fan_in) cut at +-2 (ReLU gain):
    pooled over 40 draws of 32 weights the sample std scatters by 1 / sqrt(2 * 1280) = 2 %, so
    10 % is 5 standard deviations; minrep's 1 / sqrt(fan_in) cut at 2 std (std 0.88 / 4) is
    40 % lower."""
    weights = torch.cat(
        [VAE(ModelConfig.published()).decoder.head_out.weight.flatten() for _ in range(40)]
    )
    assert weights.std().item() == pytest.approx(math.sqrt(2 / 16), rel=0.1)
    with pytest.raises(ValueError, match="gate must be one of tanh, linear"):
        ModelConfig(gate="relu")
