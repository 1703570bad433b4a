"""Models whose output law is known, set by hand (shared by the generation and analysis tests)."""

import math

import torch

from minrep.model import VAE, ModelConfig


def known_law_model(process_std: float, correlation: float = 0.0):
    """A decoder set by hand: log sigma = log(process_std) for every step, and mean =
    ``correlation`` * previous displacement (an AR(1) process), independent of the latent."""
    model = VAE(ModelConfig(scale_equivariant=False)).eval()
    with torch.no_grad():
        for parameter in model.decoder.parameters():
            parameter.zero_()
        r = model.config.residual_channels
        decoder = model.decoder
        decoder.input.weight[0, 0, 0] = 1.0  # channel 0 carries x
        decoder.causal.weight[0, 0, -1] = 1.0  # the newest input
        last = decoder.blocks[-1]
        # Gate: tanh(a) * sigmoid(b); a = x / 100 (tanh linear), b large (sigmoid = 1).
        last.filter_gate.weight[0, 0, -1] = 0.01
        last.filter_gate.bias[r] = 30.0
        # Blocks before the last pass x through the residual stream unchanged.
        # The head starts with a ReLU: skip channel 0 carries x, channel 1 carries -x.
        last.skip.weight[0, 0, 0] = 100.0
        last.skip.weight[1, 0, 0] = -100.0
        decoder.head_hidden.weight[0, 0, 0] = 1.0  # max(x, 0)
        decoder.head_hidden.weight[1, 1, 0] = 1.0  # max(-x, 0)
        decoder.head_out.weight[0, 0, 0] = correlation
        decoder.head_out.weight[0, 1, 0] = -correlation
        decoder.head_out.bias[1] = math.log(process_std)
    return model


def known_whole_model(process_std: float):
    """A ``"whole"``-decoder model set by hand: every displacement, the first included, is
    N(0, process_std^2) whatever the latent and the past (Brownian motion)."""
    model = VAE(ModelConfig(scale_equivariant=False, decoder="whole")).eval()
    with torch.no_grad():
        for parameter in [*model.decoder.parameters(), *model.memory_weights.parameters()]:
            parameter.zero_()
        model.decoder.head_out.bias[0] = math.log(process_std)  # log sigma, then coefficients
    return model
