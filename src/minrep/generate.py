"""Fast autoregressive generation of new trajectories from latent values.

The WaveNet decoder is run one time step at a time. Each dilated layer keeps a ring buffer of
the inputs it will still need (the last ``2 * dilation`` for kernel 3), so a step computes one
new position per layer instead of re-running the network on the whole receptive field. Each
block's conditioning is computed once per chunk of 256 steps (a few MB, so it stays in cache at
any length): from the latent upsampled once for the whole length (the paper's ``"window"``
decoder), or from the latent's code and the time (``"whole"``, whose memories of the past are
updated by one multiply-add per step, so that a step costs the same at any length). Shapes
follow :mod:`minrep.model`: displacements ``(batch, dim, time)``, latents ``(batch,
latent_dim)``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from minrep import MinrepError, io
from minrep.model import RESIDUAL_SCALE, VAE, fractional_coefficients, memory_decays
from minrep.progress import bar

CONDITION_CHUNK = 256  # time steps of block conditioning held at once


class GenerationError(MinrepError, ValueError):
    """A generation request this model cannot serve."""


def draw_noise(model: VAE, batch: int, n_steps: int, generator: torch.Generator) -> dict:
    """The random numbers of one generation: standard normals ``(batch, dim, n_steps)`` and,
    for mixture outputs, uniforms that pick the component."""
    shape = (batch, model.config.dim, n_steps)
    noise = {"normal": torch.randn(shape, generator=generator)}
    if model.config.n_mixtures > 1:
        noise["uniform"] = torch.rand(shape, generator=generator)
    return noise


class _Layer:
    """Ring buffer of the last ``span`` inputs of one dilated convolution, (span, batch, ch)."""

    def __init__(self, span: int, batch: int, channels: int, device=None):
        self.buffer = torch.zeros(span, batch, channels, device=device)
        self.span = span

    def push_and_stack(self, step: int, current: Tensor, taps: list[int]) -> Tensor:
        """Store ``current`` (batch, ch) as time ``step``; return the inputs at
        ``step - tap`` for each tap, concatenated along channels (batch, len(taps) * ch)."""
        self.buffer[step % self.span] = current
        return torch.cat([self.buffer[(step - tap) % self.span] for tap in taps], dim=1)


def _flat(conv) -> Tensor:
    """Convolution weight (out, in, k) -> (k * in, out), taps oldest first, for addmm."""
    return conv.weight.permute(0, 2, 1).reshape(conv.out_channels, -1).t().contiguous()


class _Block:
    """One residual block's weights as matrices for one time step at a time."""

    def __init__(self, block, config, device):
        r = config.residual_channels
        self.linear_gate = config.gate == "linear"
        # tanh(a) = 2 sigmoid(2a) - 1, and one sigmoid over filter and gate together is
        # cheaper than a tanh and a sigmoid: the filter half is computed at twice its value.
        double = torch.ones(2 * r, device=device)
        if not self.linear_gate:
            double[:r] = 2.0
        self.weight = (_flat(block.filter_gate) * double).contiguous()
        # The 1x1 conditioning convolution as a product, the filter and gate biases folded in.
        condition_bias = block.filter_gate.bias
        if block.condition.bias is not None:
            condition_bias = condition_bias + block.condition.bias
        self.condition_weight = (block.condition.weight[..., 0].t() * double).contiguous()
        self.condition_bias = condition_bias * double
        self.taps = [block.dilation * j for j in range(config.kernel_size - 1, -1, -1)]
        self.span = block.shrink + 1
        # The residual and skip 1x1 convolutions read the same input: one product for both.
        self.has_residual = block.residual is not None
        out_weight, out_bias = _flat(block.skip), torch.zeros(config.skip_channels, device=device)
        if self.has_residual:
            out_weight = torch.cat([_flat(block.residual), out_weight], dim=1)
            out_bias = torch.cat([block.residual.bias, out_bias])
        self.out_weight, self.out_bias = out_weight.contiguous(), out_bias
        self.r = r

    def gated(self, stacked: Tensor, condition_term: Tensor) -> Tensor:
        """Gated activation (batch, r) from the stacked inputs and this step's conditioning."""
        pre = torch.addmm(condition_term, stacked, self.weight)
        if self.linear_gate:
            return pre[:, : self.r] * torch.sigmoid(pre[:, self.r :])
        both = torch.sigmoid(pre)
        filter_half, gate = both[:, : self.r], both[:, self.r :]
        # tanh(filter) * sigmoid(gate) = (2 sigmoid(2 filter) - 1) * gate
        return torch.addcmul(-gate, filter_half, gate, value=2.0)


class FastDecoder:
    """The WaveNet decoder of a model rearranged for generation one step at a time: built once
    per model, then :meth:`run` for any latents and length."""

    @torch.no_grad()
    def __init__(self, model: VAE):
        self.model = model.eval()
        self.config = c = model.config
        self.device = next(model.parameters()).device
        decoder = model.decoder
        self.blocks = [_Block(block, c, self.device) for block in decoder.blocks]
        self.stack_scaling = c.stack_scaling
        self.skip_scale = decoder.skip_scale if c.stack_scaling else 1.0
        self.skip_bias = sum(block.skip.bias for block in decoder.blocks)
        self.w_in, self.b_in = _flat(decoder.input), decoder.input.bias
        # The "whole" decoder's input has a last channel, 1 for observed displacements: its
        # weight is folded into a second bias, used from the first observed input on.
        self.b_in_observed = self.b_in
        if c.decoder == "whole":
            self.b_in_observed = self.b_in + self.w_in[-1]
            self.w_in = self.w_in[:-1].contiguous()
        self.w_causal, self.b_causal = _flat(decoder.causal), decoder.causal.bias
        self.causal_taps = list(range(c.causal_kernel - 1, -1, -1))
        self.w_hidden, self.b_hidden = _flat(decoder.head_hidden), decoder.head_hidden.bias
        self.w_out, self.b_out = _flat(decoder.head_out), decoder.head_out.bias

    def _conditioning(self, part: Tensor) -> list[Tensor]:
        """Each block's conditioning term from the conditioning of a chunk of times, ``part``
        (chunk, batch, condition_channels) -> (chunk, batch, 2r) each. Computed chunk by chunk:
        for the whole of a long trajectory it would not fit in cache."""
        rows = part.reshape(-1, part.shape[-1])
        return [
            torch.addmm(b.condition_bias, rows, b.condition_weight).view(*part.shape[:2], -1)
            for b in self.blocks
        ]

    def _skips(self, x: Tensor, step: int, layers: list[_Layer], terms) -> Tensor:
        """The summed skip outputs (batch, skip) of the step that reads displacement ``x``;
        ``layers``: the causal layer's buffer, then each block's."""
        bias = self.b_in_observed if step >= self.model.receptive_field else self.b_in
        h = layers[0].push_and_stack(step, torch.addmm(bias, x, self.w_in), self.causal_taps)
        h = torch.addmm(self.b_causal, h, self.w_causal)
        skips = self.skip_bias
        for block, layer, term in zip(self.blocks, layers[1:], terms, strict=True):
            gated = block.gated(layer.push_and_stack(step, h, block.taps), term)
            out = torch.addmm(block.out_bias, gated, block.out_weight)
            if block.has_residual:
                residual, out = out[:, : block.r], out[:, block.r :]
                h = (2 * h + residual) * RESIDUAL_SCALE if self.stack_scaling else h + residual
            skips = skips + out
        return skips * self.skip_scale if self.stack_scaling else skips

    def run(self, z: Tensor, context: Tensor, noise: dict, progress: bool = False) -> Tensor:
        """Displacements (batch, dim, n_steps) after ``context`` (batch, dim, receptive_field)
        for latents ``z`` (batch, latent_dim), with the random numbers of ``noise``. The
        ``"whole"`` decoder starts from nothing: its context is zeros, marked unobserved."""
        c, rf = self.config, self.model.receptive_field
        whole = c.decoder == "whole"
        batch, n_steps = z.shape[0], noise["normal"].shape[-1]
        total = rf + n_steps
        if not whole:
            condition_by_time = self.model.upsampler(z, total).permute(2, 0, 1).contiguous()
        log_scale = self.model.log_scale(z)
        inv_scale = torch.exp(-log_scale)[:, None] if log_scale is not None else None
        r = c.residual_channels
        layers = [_Layer(c.causal_kernel, batch, r, self.device)]
        layers += [_Layer(b.span, batch, r, self.device) for b in self.blocks]
        # Time first, so that each step reads one contiguous block.
        step_noise = {k: v.permute(2, 0, 1).contiguous().to(self.device) for k, v in noise.items()}
        series = torch.zeros(total, batch, c.dim, device=self.device)
        series[:rf] = context.permute(2, 0, 1)
        if whole:
            # In the decoder's units: the memories of the past, the series the mean's
            # coefficients multiply, the direction of the last step.
            memories = torch.zeros(batch, c.dim, len(c.memory_timescales), device=self.device)
            decay = memory_decays(c.memory_timescales).to(memories)
            scaled = torch.zeros_like(series)
            direction = torch.zeros(batch, c.dim, device=self.device)
            blind = torch.zeros(batch, 2, device=self.device)  # reads_past off
            fractional = c.memory == "fractional"
            lags = c.linear_window
            ageing = self.model.ageing_of(z, torch.arange(n_steps))  # (batch, n_steps) or None
            if fractional:
                # The short-memory series y = x + sum_j pi_j x_(t-j) (VAE.fractional_memory),
                # whose last linear_window values the mean's coefficients multiply; the
                # memories are delayed by rf steps and weighted by the tail weights of d.
                order = self.model.fractional_order(z)
                recent = fractional_coefficients(order, rf).flip(1).T.contiguous()
                tail_weights = self.model.fractional_tail_weights(order)[:, None]
                short = torch.zeros_like(series)
        for step in bar(range(total - 1), desc="generate", enabled=progress, unit="step"):
            now = step + 1  # the time whose displacement this step predicts
            if step == 0 or now % CONDITION_CHUNK == 0:
                chunk_start = now - now % CONDITION_CHUNK
                if whole:
                    times = torch.arange(chunk_start, chunk_start + CONDITION_CHUNK) - rf
                    condition = self.model.condition_at(z, times.to(self.device))
                    if not fractional:
                        weights = self.model.memory_weights(condition).permute(3, 0, 1, 2)
                    part = condition.dense().permute(2, 0, 1)
                else:
                    part = condition_by_time[chunk_start : chunk_start + CONDITION_CHUNK]
                terms = self._conditioning(part)
            if whole and not c.reads_past:
                x_features = blind  # the WaveNet sees only that the past exists
            elif whole:
                x = scaled[step]
                length = x.norm(dim=1, keepdim=True)
                x_features = torch.cat([length, (x * direction).sum(1, keepdim=True)], dim=1)
                direction = x / length.clamp_min(1e-30)  # 0 where x is
            else:
                x = series[step] if inv_scale is None else series[step] * inv_scale
                x_features = x
            skips = self._skips(x_features, step, layers, [t[now - chunk_start] for t in terms])
            if now < rf:
                continue  # still inside the given context
            hidden = torch.addmm(self.b_hidden, F.relu(skips), self.w_hidden)
            out = torch.addmm(self.b_out, F.relu(hidden), self.w_out)[..., None]
            t = now - rf
            if whole:
                if fractional:
                    past = (scaled[now - rf : now] * recent[..., None]).sum(0)
                    memory = past + (tail_weights * memories).sum(dim=2)
                    memory_mean, window_of = -memory[..., None], short
                else:
                    memory_mean = (weights[now - chunk_start] * memories).sum(dim=2)[..., None]
                    window_of = scaled
                windows = window_of[now - lags : now].permute(1, 2, 0)[:, :, None]
                aged = None if ageing is None else ageing[:, t, None]
                law = self.model.whole_law(out, windows, memory_mean, log_scale, aged)
            else:
                law = self.model.law(out, log_scale)
            uniform = step_noise["uniform"][t][..., None] if "uniform" in step_noise else None
            series[now] = law.sample(step_noise["normal"][t][..., None], uniform)[..., 0]
            if whole:
                scaled[now] = series[now] if inv_scale is None else series[now] * inv_scale
                if fractional:
                    short[now] = scaled[now] + memory
                    newest = scaled[now - rf]  # zeros before the start
                else:
                    newest = scaled[now]
                memories = torch.addcmul(memories * decay, 1 - decay, newest[..., None])
        return series[rf:].permute(1, 2, 0)


@torch.inference_mode()
def generate(
    model: VAE,
    z,
    n_steps: int,
    context=None,
    seed: int | None = None,
    noise: dict | None = None,
    progress: bool = False,
    decoder: FastDecoder | None = None,
) -> np.ndarray:
    """Generate ``n_steps`` displacements for each latent row of ``z`` (batch, latent_dim).

    ``context`` (batch, dim, receptive_field) holds the displacements that precede the first
    generated one: zeros by default (the paper's choice), or the start of a real trajectory.
    Returns float32 ``(batch, dim, n_steps)``. ``noise`` (see :func:`draw_noise`) fixes the
    random numbers; otherwise they are drawn from ``seed`` (None: fresh randomness).
    ``decoder``: the model's :class:`FastDecoder`, to build it once for many calls.

    Latents that are not finite, or so large that the model's float32 arithmetic overflows,
    are a :class:`GenerationError`; so are generated displacements that come out NaN or
    infinite, naming their rows.
    """
    z = checked_latents(model, z)
    if n_steps < 1:
        raise GenerationError(f"n_steps must be >= 1, got {n_steps}")
    context = _context(model, context, z.shape[0])
    if noise is None:
        noise = draw_noise(model, z.shape[0], n_steps, _generator(seed))
    return _generate(model, z, context, noise, progress, decoder)


def _generate(model, z, context, noise, progress, decoder, first_row: int = 0) -> np.ndarray:
    """The generation of checked latents ``z`` (an array); output rows that are not finite
    are an error naming them (counted from ``first_row``)."""
    # Runs where the model is (CPU or GPU); the random numbers are drawn on the CPU, so a
    # seed gives the same trajectories on either, to rounding.
    fast = decoder or FastDecoder(model)
    z_tensor = torch.from_numpy(z)
    out = fast.run(z_tensor.to(fast.device), context.to(fast.device), noise, progress)
    out = out.cpu().numpy().copy()
    check_generated(out, z, first_row)
    return out


def checked_latents(model: VAE, z) -> np.ndarray:
    """``z`` as float32 ``(batch, latent_dim)``, every value finite and within what the
    model's float32 arithmetic can generate from (its displacement scale and conditioning
    finite); else a :class:`GenerationError` naming the row and the latent."""
    c = model.config
    try:
        values = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise GenerationError(f"z must be numbers ({err})") from None
    if values.ndim != 2 or values.shape[1] != c.latent_dim:
        raise GenerationError(
            f"z must have shape (batch, {c.latent_dim}), got {tuple(values.shape)}"
        )
    with np.errstate(over="ignore"):
        z = values.astype(np.float32)
    bad = ~np.isfinite(z)
    if bad.any():
        row, latent = (int(v) for v in np.argwhere(bad)[0])
        finite = np.isfinite(values[row, latent])
        what = "too large for float32" if finite else "not a finite number"
        raise GenerationError(
            f"latent values: row {row}, latent {latent} = {values[row, latent]:.4g} is {what}"
            + _rows_count(np.flatnonzero(bad.any(axis=1)))
        )
    with torch.inference_mode():
        device = next(model.parameters()).device
        tensor = torch.from_numpy(z).to(device)
        if c.scale_equivariant:  # the decoder multiplies by exp(log_scale), divides by it
            log_scale = model.log_scale(tensor)
            scale_ok = torch.isfinite(torch.exp(log_scale)) & torch.isfinite(torch.exp(-log_scale))
            rows = np.flatnonzero(~scale_ok.cpu().numpy())
            if rows.size:
                raise GenerationError(
                    f"latent values: row {rows[0]} ({_z_text(z[rows[0]])}) puts the model's "
                    f"displacement scale at exp({log_scale[rows[0]].item():.4g}), beyond float32 "
                    f"(the model's latents are of order 1: the prior is N(0, 1))"
                    + _rows_count(rows)
                )
        if c.decoder == "whole":
            times = torch.zeros(1, dtype=torch.long)
            condition = model.condition_at(tensor, times).dense().flatten(1)
        else:
            condition = model.upsampler(tensor, model.receptive_field + 1).flatten(1)
        rows = np.flatnonzero(~torch.isfinite(condition).all(dim=1).cpu().numpy())
        if rows.size:
            raise GenerationError(
                f"latent values: row {rows[0]} ({_z_text(z[rows[0]])}) puts the model's "
                f"conditioning beyond float32 (the model's latents are of order 1: the prior "
                f"is N(0, 1))" + _rows_count(rows)
            )
    return z


def check_generated(displacements: np.ndarray, z: np.ndarray, first_row: int = 0) -> None:
    """Refuse generated displacements that are not finite, naming the rows and their
    latent values (rows counted from ``first_row``)."""
    finite = np.isfinite(displacements).reshape(len(displacements), -1).all(axis=1)
    rows = np.flatnonzero(~finite)
    if rows.size:
        raise GenerationError(
            f"generation from latent row {rows[0] + first_row} ({_z_text(z[rows[0]])}) gives "
            f"displacements that are not finite (NaN or infinity): latents too far from the "
            f"prior N(0, 1), or a broken model?" + _rows_count(rows + first_row)
        )


def _z_text(row: np.ndarray) -> str:
    return "z = " + ", ".join(f"{v:.4g}" for v in row)


def _rows_count(rows: np.ndarray, limit: int = 5) -> str:
    """`` (3 rows: 1, 4, 7)`` when there are several."""
    if rows.size < 2:
        return ""
    listed = ", ".join(str(int(r)) for r in rows[:limit])
    more = f" and {rows.size - limit} more" if rows.size > limit else ""
    return f" ({rows.size} rows: {listed}{more})"


def _generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from fresh entropy when it is None."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _context(model: VAE, context, batch: int) -> Tensor:
    c = model.config
    shape = (batch, c.dim, model.receptive_field)
    if context is None:
        return torch.zeros(shape)
    if c.decoder == "whole":
        raise GenerationError(
            "this model's decoder predicts every displacement from the start: it generates "
            "from nothing and takes no context"
        )
    context = torch.as_tensor(np.asarray(context, dtype=np.float32))
    if tuple(context.shape) != shape:
        raise GenerationError(
            f"context must have shape {shape} (the receptive field of displacements before the "
            f"first generated one), got {tuple(context.shape)}"
        )
    finite = torch.isfinite(context).flatten(1).all(dim=1)
    if not finite.all():
        rows = np.flatnonzero(~finite.numpy())
        raise GenerationError(
            f"context row {rows[0]} holds displacements that are not finite" + _rows_count(rows)
        )
    return context


def latents_with_values(model: VAE, values: dict[int, float], n: int) -> np.ndarray:
    """``n`` copies of a latent vector with the given entries, the others at the prior mean 0."""
    z = np.zeros((n, model.config.latent_dim), dtype=np.float32)
    for index, value in values.items():
        if not 0 <= index < model.config.latent_dim:
            raise GenerationError(
                f"latent index {index} is out of range: the model has {model.config.latent_dim}"
                f" latents (0..{model.config.latent_dim - 1})"
            )
        z[:, index] = value
    return z


def sweep_latents(model: VAE, index: int, values, per_value: int) -> np.ndarray:
    """Latent rows sweeping latent ``index`` over ``values``, ``per_value`` rows each, the
    other latents at the prior mean 0 (the paper's Fig. 3 set-up): ``(len(values) * per_value,
    latent_dim)``."""
    z = latents_with_values(model, {index: 0.0}, len(values) * per_value)
    z[:, index] = np.repeat(np.asarray(values, dtype=np.float32), per_value)
    return z


def generated_set(
    displacements: np.ndarray, z: np.ndarray, meta: dict, labels: dict | None = None
) -> io.Trajectories:
    """Generated displacements as a dataset, the latent values as labels ``z_0``, ``z_1``, ...
    next to any other ``labels`` (e.g. those of the encoded inputs)."""
    check_generated(np.asarray(displacements), np.asarray(z))
    latent_labels = {f"z_{i}": z[:, i].astype(np.float64) for i in range(z.shape[1])}
    return io.Trajectories(displacements, {**(labels or {}), **latent_labels}, meta)


def generate_many(
    model: VAE,
    z: np.ndarray,
    n_steps: int,
    context: np.ndarray | None = None,
    seed: int | None = None,
    batch_size: int = 1000,
    progress: bool = False,
) -> np.ndarray:
    """:func:`generate` for any number of latent rows, ``batch_size`` at a time; the random
    numbers come from one generator seeded with ``seed`` (same seed and batch size, same
    trajectories; None: fresh randomness). Returns float32 ``(n, dim, n_steps)``. Every latent
    row is checked before any is generated, and every generated row after (see
    :func:`generate`)."""
    z = checked_latents(model, z)  # every row, before any is generated
    if n_steps < 1:
        raise GenerationError(f"n_steps must be >= 1, got {n_steps}")
    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    generator = _generator(seed)
    decoder = FastDecoder(model)
    out = np.empty((len(z), model.config.dim, n_steps), dtype=np.float32)
    chunks = range(0, len(z), batch_size)
    with torch.inference_mode():
        for lo in bar(chunks, desc="generate", enabled=progress and len(chunks) > 1, unit="batch"):
            rows = slice(lo, lo + batch_size)
            noise = draw_noise(model, len(z[rows]), n_steps, generator)
            part_context = _context(model, None if context is None else context[rows], len(z[rows]))
            out[rows] = _generate(
                model,
                z[rows],
                part_context,
                noise,
                progress=progress and len(chunks) < 2,
                decoder=decoder,
                first_row=lo,
            )
    return out
