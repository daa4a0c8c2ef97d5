"""The PyTorch train step of a case: the reference model, AdamW, the task's loss.

The only module of the package besides `torch_models` that imports torch (an optional extra:
`pip install -e '.[convert]'`). Inputs are the JAX side's own host batch, converted to NCHW,
so both frameworks see the same pixels and labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from dllab_jax.bench import torch_models
from dllab_jax.errors import UserError

VARIANTS = ("eager", "channels_last", "bf16_autocast", "compile")


def num_params(model: torch.nn.Module) -> int:
    """All parameters, frozen ones included (as flax's `params` collection holds them)."""
    return sum(p.numel() for p in model.parameters())


def _to_device(array: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def _images(host_batch: dict, device) -> torch.Tensor:
    # Normalised as the tasks do, up to the exact mean/std (irrelevant to speed).
    x = _to_device(host_batch["image"], device).permute(0, 3, 1, 2).float()
    return (x / 255.0 - 0.45) / 0.25


def _loss_and_inputs(task: str, host_batch: dict, device, rng: np.random.Generator):
    """(inputs, loss_fn(outputs) -> scalar) of the task's training loss."""
    if task == "diffusion":
        images = _images(host_batch, device)
        noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32)).to(device)
        t = torch.from_numpy(rng.uniform(0, 1, (images.shape[0], 1)).astype(np.float32))
        concepts = [
            _to_device(host_batch[k].astype(np.float32).reshape(len(images), -1), device)
            for k in ("shape_onehot", "colour", "size")
        ]
        x_t = 0.7 * images + 0.7 * noise
        return (x_t, t.to(device), concepts), lambda out: F.mse_loss(out, noise)
    labels = _to_device(host_batch["label"].astype(np.int64), device)
    inputs = (_images(host_batch, device),)
    if labels.ndim == 1:
        return inputs, lambda logits: F.cross_entropy(logits, labels)

    def dense_loss(logits):
        if logits.shape[-2:] != labels.shape[-2:]:  # heads that predict at a lower resolution
            logits = F.interpolate(logits, labels.shape[-2:], mode="bilinear")
        return F.cross_entropy(logits, labels, ignore_index=255)

    return inputs, dense_loss


class TorchTrainStep:
    """One AdamW step of the reference model on the case's batch, in a chosen variant."""

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict,
        task: str,
        host_batch: dict,
        variant: str,
        expected_params: int | None = None,
    ):
        """Raises UserError before running anything if the reference's parameter count is
        not `expected_params` (the Flax model's): the two would not be the same model."""
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":  # this variant's own peak, not the process's so far
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        torch.manual_seed(0)
        model = torch_models.build_torch_model(model_name, **model_kwargs).to(self.device)
        self.num_params = num_params(model)
        if expected_params is not None and self.num_params != expected_params:
            raise UserError(
                f"the PyTorch reference of {model_name!r} has {self.num_params:,} parameters, "
                f"the Flax model {expected_params:,}; fix dllab_jax/bench/torch_models/"
            )
        inputs, self.loss_fn = _loss_and_inputs(
            task, host_batch, self.device, np.random.default_rng(0)
        )
        if variant == "channels_last":
            model = model.to(memory_format=torch.channels_last)
            inputs = tuple(
                x.contiguous(memory_format=torch.channels_last)
                if isinstance(x, torch.Tensor) and x.ndim == 4
                else x
                for x in inputs
            )
        model.train()
        self.model, self.inputs, self.variant = model, inputs, variant
        self.optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4
        )
        self.forward: Callable = torch.compile(model) if variant == "compile" else model
        self.autocast = variant == "bf16_autocast"
        # The first steps compile (torch.compile) or tune (cuDNN): time them apart.
        start = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - start

    def __call__(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = self.loss_fn(self.forward(*self.inputs))
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def peak_memory(self) -> int | None:
        if self.device.type != "cuda":
            return None
        return int(torch.cuda.max_memory_allocated())
