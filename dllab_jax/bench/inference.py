"""Inference cases of the benchmark: the BLIP two-tower forward (retrieval's evaluation).

The JAX side is `TwoTower` jitted at a size of `TWO_TOWER_SIZES`; the PyTorch side is
transformers' `BlipForImageTextRetrieval` built offline from the matching config (random
weights: speed does not depend on them), running the same two towers and projections
(`vision_model` + `vision_proj`, `text_encoder` in text-only mode + `text_proj`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from dllab_jax.bench import timing
from dllab_jax.models.blip_sizes import TWO_TOWER_SIZES
from dllab_jax.models.two_tower import TwoTower


def _inputs(size: dict, batch: int, text_len: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    side = size["image"]["image_size"]
    images = rng.standard_normal((batch, side, side, 3)).astype(np.float32)
    lengths = rng.integers(text_len // 2, text_len + 1, batch)
    mask = (np.arange(text_len)[None] < lengths[:, None]).astype(np.int32)
    ids = (rng.integers(4, size["text"]["vocab_size"], (batch, text_len)) * mask).astype(np.int32)
    return images, ids, mask


class JaxTwoTowerForward:
    """Embeds a batch of images and of texts; `__call__` runs and waits for one batch."""

    def __init__(self, size_name: str, batch: int, text_len: int, dtype: str):
        size = TWO_TOWER_SIZES[size_name]
        self.module = TwoTower(**size, dtype=jnp.dtype(dtype))
        images, ids, mask = _inputs(size, batch, text_len)
        self.inputs = tuple(jnp.asarray(x) for x in (images, ids, mask))
        init = jax.jit(lambda key: self.module.init(key, *(x[:1] for x in self.inputs)))
        self.variables = init(jax.random.key(0))
        forward = jax.jit(lambda v, *inputs: self.module.apply(v, *inputs))
        start = time.perf_counter()
        self.compiled = forward.lower(self.variables, *self.inputs).compile()
        self.compile_s = time.perf_counter() - start
        self.flops = timing.flops_of(self.compiled)
        self.num_params = sum(x.size for x in jax.tree.leaves(self.variables["params"]))
        self.num_devices = 1

    def __call__(self) -> None:
        jax.block_until_ready(self.compiled(self.variables, *self.inputs))


# transformers' name of each per-tower size -> ours in the tower's sub-config (image, text).
_HF_TOWER_KEYS = dict(
    hidden_size="hidden_size",
    intermediate_size="mlp_dim",
    num_hidden_layers="num_layers",
    num_attention_heads="num_heads",
    layer_norm_eps="layer_norm_eps",
)


def _hf_tower(size: dict, tower: str) -> dict:
    return {hf: size[tower][ours] for hf, ours in _HF_TOWER_KEYS.items()}


def hf_blip_config(size: dict):
    """transformers' `BlipConfig` of a `TWO_TOWER_SIZES` entry."""
    from transformers import BlipConfig

    vision = dict(
        _hf_tower(size, "image"),
        image_size=size["image"]["image_size"],
        patch_size=size["image"]["patch_size"],
    )
    text = dict(
        _hf_tower(size, "text"),
        vocab_size=size["text"]["vocab_size"],
        max_position_embeddings=size["text"]["max_position_embeddings"],
        # transformers 5 needs these set for a non-default vocabulary.
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        sep_token_id=3,
    )
    return BlipConfig(
        vision_config=vision, text_config=text, image_text_hidden_size=size["embed_dim"]
    )


def torch_two_tower_params(model) -> int:
    """The parameters of BlipForImageTextRetrieval that TwoTower holds (no ITM cross-attention
    or head)."""
    towers = ("vision_model.", "text_encoder.", "vision_proj.", "text_proj.")
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.startswith(towers) and ".crossattention." not in name
    )


class _TorchRunner:
    """A PyTorch callable timed like a JAX step: `__call__` runs it and waits for the GPU;
    the first run (compilation, cuDNN tuning) is timed apart as `compile_s`."""

    def _start(self, run) -> None:
        self._run = run
        start = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - start

    def __call__(self) -> None:
        self._run()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def peak_memory(self) -> int | None:
        if self.device.type != "cuda":
            return None
        return int(self.torch.cuda.max_memory_allocated())


class TorchTwoTowerForward(_TorchRunner):
    """The same forward in transformers' PyTorch BLIP, eager or `torch.compile`d towers."""

    def __init__(self, size_name: str, batch: int, text_len: int, variant: str):
        import torch
        import torch.nn.functional as F
        from transformers import BlipForImageTextRetrieval

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        size = TWO_TOWER_SIZES[size_name]
        torch.manual_seed(0)
        model = BlipForImageTextRetrieval(hf_blip_config(size)).to(self.device).eval()
        self.num_params = torch_two_tower_params(model)
        images, ids, mask = _inputs(size, batch, text_len)
        pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        ids, mask = (torch.from_numpy(x.astype(np.int64)).to(self.device) for x in (ids, mask))
        autocast = variant == "bf16_autocast"

        def forward():
            with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, autocast):
                vision = model.vision_model(pixel_values=pixel_values)[0][:, 0]
                text = model.text_encoder(input_ids=ids, attention_mask=mask)[0][:, 0]
                return (
                    F.normalize(model.vision_proj(vision), dim=-1),
                    F.normalize(model.text_proj(text), dim=-1),
                )

        self._start(torch.compile(forward) if variant == "compile" else forward)


# BLIP's special ids in the random-weight benchmark models: pad, bos ([DEC]), eos ([SEP]).
PAD, DEC, SEP = 0, 1, 3


class JaxCaptionDecode:
    """Greedy captioning of a batch with `dllab_jax.decoding` (jitted, key/value cache), every
    caption forced to `max_length` tokens (min_length = max_length) so both frameworks
    generate the same number of tokens."""

    def __init__(self, size_name: str, batch: int, max_length: int, dtype: str):
        from dllab_jax import decoding
        from dllab_jax.models.blip_sizes import CAPTIONER_SIZES
        from dllab_jax.models.captioner import BlipCaptioner

        size = CAPTIONER_SIZES[size_name]
        self.module = BlipCaptioner(**size, dtype=jnp.dtype(dtype))
        images, _, _ = _inputs(size, batch, 2)
        self.images = jnp.asarray(images)
        ids = jnp.zeros((1, 1), jnp.int32)
        init = jax.jit(lambda key: self.module.init(key, self.images[:1], ids, ids + 1))
        self.variables = {"params": init(jax.random.key(0))["params"]}
        self.num_params = sum(x.size for x in jax.tree.leaves(self.variables["params"]))
        self.tokens_per_step = batch * (max_length - 1)
        self.decode = lambda: decoding.decode(
            self.module,
            self.variables,
            self.images,
            jnp.asarray([DEC], jnp.int32),
            max_length=max_length,
            min_length=max_length,
            eos_id=SEP,
            pad_id=PAD,
        )
        start = time.perf_counter()
        self()
        self.compile_s = time.perf_counter() - start
        self.flops, self.num_devices = None, 1

    def __call__(self) -> None:
        jax.block_until_ready(self.decode())


class TorchCaptionGenerate(_TorchRunner):
    """transformers' `BlipForConditionalGeneration.generate`, greedy, the same lengths."""

    def __init__(self, size_name: str, batch: int, max_length: int, variant: str):
        import torch
        from transformers import BlipConfig, BlipForConditionalGeneration

        from dllab_jax.models.blip_sizes import CAPTIONER_SIZES

        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        size = CAPTIONER_SIZES[size_name]
        two_tower_like = dict(size, embed_dim=256)
        hf = hf_blip_config(two_tower_like)
        text = dict(hf.text_config.to_dict(), bos_token_id=DEC, eos_token_id=2, sep_token_id=SEP)
        config = BlipConfig(vision_config=hf.vision_config.to_dict(), text_config=text)
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).to(self.device).eval()
        self.num_params = sum(p.numel() for p in model.parameters())
        images, _, _ = _inputs(size, batch, 2)
        pixel_values = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)
        # HF drops the trailing [SEP] of the tokenized prompt and starts from [DEC].
        input_ids = torch.tensor([[DEC, SEP]] * batch, device=self.device)
        autocast = variant == "bf16_autocast"

        def generate():
            with torch.no_grad(), torch.autocast(self.device.type, torch.bfloat16, autocast):
                return model.generate(
                    pixel_values=pixel_values,
                    input_ids=input_ids,
                    max_length=max_length,
                    min_length=max_length,
                    do_sample=False,
                    num_beams=1,
                )

        self._start(generate)
