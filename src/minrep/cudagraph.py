"""The training step's forward and backward pass as one CUDA graph.

minrep's network is small (about 263,000 parameters): on a GPU, an eager training step at
batch 256 spends most of its time launching several hundred small kernels from Python
(measured on an H200: 9.7 ms per step at batch 256, 19.4 ms at 1,024, benchmarks/results/
gpu_throughput_h200.json). Captured once and replayed, the same kernels run back to back.
The optimiser stays outside the graph (eager, a few fused kernels), so that the plan can
change its learning rate and momentum and a branch can reset its state as on the CPU.

Status (issue 13): on an H200 a step takes 6.3 ms instead of 12.1 ms at batch 256. The first
version trained worse through ``minrep train`` (held-out NLL -2.326 against -2.366 after 3
epochs) because Lightning sets every ``.grad`` to None before each validation, after which
Adam skipped every parameter but at the epoch's last, eager, batch; :class:`GradientGraph`
now points them at its gradients at every call. That is not yet measured on a GPU, so
``TrainConfig.cuda_graph`` stays off by default; ``benchmarks/gpu_training.py`` measures it.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from minrep.model import VAE

WARMUP_STEPS = 3
"""Eager passes before the capture, on a side stream: they let cuDNN choose its algorithms
and allocate its workspaces outside the graph (PyTorch's recipe for whole-network capture)."""


class GradientGraph:
    """Loss and gradients of :meth:`minrep.model.VAE.loss` for batches of the shape of
    ``example`` (batch, dim, time), replayed from a CUDA graph.

    Calling it with a batch, beta and the decorrelation weight returns the loss (a tensor the
    next call overwrites) and points the parameters' ``.grad`` at the gradients, tensors that
    belong to the graph. A batch of another shape (the last, smaller batch of an epoch; a
    cropped prefix) runs eagerly and its gradients are copied into the same tensors. Without
    ``capture`` (a CPU) every batch runs eagerly. Under autocast (``bf16-mixed``) the capture
    keeps the caller's autocast without its weight cache, which a graph cannot hold."""

    def __init__(
        self, model: VAE, example: Tensor, reference_steps: int | None, capture: bool = True
    ):
        self.model, self.reference_steps = model, reference_steps
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.batch = example.detach().clone()
        self.graph, self.autocast, self.grads = None, None, None
        if capture:
            self._capture()

    def _capture(self) -> None:
        device = self.batch.device
        self.beta = torch.zeros((), device=device)
        self.decorrelation = torch.zeros((), device=device)
        self.autocast = dict(
            device_type="cuda",
            dtype=torch.get_autocast_dtype("cuda"),
            enabled=torch.is_autocast_enabled("cuda"),
            cache_enabled=False,
        )
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._gradients(self.batch, self.beta, self.decorrelation)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss, self.grads = self._gradients(self.batch, self.beta, self.decorrelation)

    def __call__(self, batch: Tensor, beta: float, decorrelation: float) -> Tensor:
        if self.graph is not None and batch.shape == self.batch.shape:
            self.batch.copy_(batch)
            self.beta.fill_(beta)
            self.decorrelation.fill_(decorrelation)
            self.graph.replay()
            loss = self.loss
        else:
            loss, grads = self._gradients(batch, beta, decorrelation)
            if self.grads is None:
                self.grads = grads
            for mine, grad in zip(self.grads, grads, strict=True):
                if grad is not None and mine is not grad:
                    mine.copy_(grad)
        # Pointed again at every call: Lightning sets every .grad to None before each
        # validation (LightningModule.on_validation_model_zero_grad), after which the
        # optimiser would skip every parameter (what made the graph train worse on an H200).
        for param, grad in zip(self.params, self.grads, strict=True):
            param.grad = grad
        return loss

    def _gradients(self, batch: Tensor, beta, decorrelation) -> tuple[Tensor, tuple]:
        """Loss and gradients by ``torch.autograd.grad``, never through the parameters'
        gradient accumulators, which keep the stream they were made on."""
        with torch.autocast(**self.autocast) if self.autocast else nullcontext():
            loss, _ = self.model.loss(batch, beta, decorrelation, self.reference_steps)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return loss.detach(), list(grads)
