"""BLIP's image-text contrastive model `TwoTower` (registry name `two_tower`, BLIP's ITC head).

The two towers are defined once, in `blip_vision.py` (ViT, HF `BlipVisionModel`) and
`blip_text.py` (BERT, HF `BlipTextModel`); `TwoTower` composes them from nested sub-configs,
as big_vision's two towers do: `config.model.image` and `config.model.text` are dicts of the
towers' constructor arguments (sizes in `blip_sizes.py`). The CLS token of each tower -> a
linear projection (`vision_proj`, `text_proj`) -> L2 normalisation, plus a temperature that
is a fixed number or a learned log-parameter. Parameter names are HF
`BlipForImageTextRetrieval`'s, so the published weights load by renaming
(`dllab_jax.weights.hf_blip`). At `TWO_TOWER_SIZES["tiny"]` it trains from scratch on CPU; at
`"blip_base"` it holds the published BLIP ViT-B/16 (384 px) + BERT-base weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from dllab_jax import registry
from dllab_jax.models.blip_layers import INIT, l2_normalize
from dllab_jax.models.blip_sizes import TEXT_SIZES, VISION_SIZES
from dllab_jax.models.blip_text import BlipTextEncoder
from dllab_jax.models.blip_vision import BlipVisionEncoder
from dllab_jax.models.layers import ComposedModule, stop_gradient_if

F32 = jnp.float32


@registry.models.register("two_tower")
class TwoTower(ComposedModule):
    """BLIP's image-text contrastive model: two towers, CLS -> projection -> L2 norm.

    Submodules (HF `BlipForImageTextRetrieval` names): `vision_model` (BlipVisionEncoder),
    `text_encoder` (BlipTextEncoder, text-only), `vision_proj`, `text_proj` (Dense to
    `embed_dim`), and with `learn_temperature` the scalar parameter `log_temperature`.
    Defaults are `TWO_TOWER_SIZES["tiny"]`.

    Attributes:
      image: the image tower's arguments (`BlipVisionEncoder`: image_size, patch_size,
        hidden_size, num_layers, num_heads, mlp_dim, layer_norm_eps, dropout,
        attention_dropout), e.g. `VISION_SIZES["small"]`; missing keys take its defaults.
      text: the text tower's arguments (`BlipTextEncoder`: vocab_size (the tokenizer's),
        hidden_size, num_layers, num_heads, mlp_dim, max_position_embeddings (BLIP base: 512;
        tokenizers may cut shorter, e.g. 35), layer_norm_eps, dropout, attention_dropout).
      embed_dim: size E of the shared embedding space (BLIP: 256).
      init_temperature: the temperature tau (similarities are divided by it); the initial
        value when learned.
      learn_temperature: learn log(tau) as the parameter `log_temperature`; otherwise tau
        is the constant `init_temperature` and no parameter exists.
      frozen: towers (`vision_model`, `text_encoder`) that run in inference mode behind
        `stop_gradient`: no backward pass through them. Not a config key: the training loop
        sets it to the towers `config.optimizer.trainable` leaves untrained
        (`optim.with_frozen_submodules`).
      dtype: compute dtype (parameters stay float32; outputs are float32).
    """

    image: Mapping[str, Any] = FrozenDict(VISION_SIZES["tiny"])
    text: Mapping[str, Any] = FrozenDict(TEXT_SIZES["tiny"])
    embed_dim: int = 128
    init_temperature: float = 0.1
    learn_temperature: bool = False
    frozen: tuple[str, ...] = ()
    dtype: Any = jnp.float32

    def setup(self):
        self.vision_model = BlipVisionEncoder(**self.image, dtype=self.dtype)
        self.text_encoder = BlipTextEncoder(**self.text, dtype=self.dtype)
        self.vision_proj = nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=INIT)
        self.text_proj = nn.Dense(self.embed_dim, dtype=self.dtype, kernel_init=INIT)
        if self.learn_temperature:
            self.log_temperature = self.param(
                "log_temperature", nn.initializers.constant(math.log(self.init_temperature)), ()
            )

    def encode_image(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """[B, image_size, image_size, 3] normalised float32 -> [B, embed_dim] unit vectors."""
        frozen = "vision_model" in self.frozen
        tokens = self.vision_model(images, train=train and not frozen)
        return l2_normalize(self.vision_proj(stop_gradient_if(frozen, tokens[:, 0])).astype(F32))

    def encode_text(
        self, input_ids: jnp.ndarray, attention_mask: jnp.ndarray, train: bool = False
    ) -> jnp.ndarray:
        """input_ids [B, L] int, attention_mask [B, L] (1 = token) -> [B, embed_dim] unit vectors.

        The output at the first token (BLIP's tokenizer puts [CLS] there) embeds the text.
        """
        frozen = "text_encoder" in self.frozen
        tokens = self.text_encoder(input_ids, attention_mask, train=train and not frozen)
        return l2_normalize(self.text_proj(stop_gradient_if(frozen, tokens[:, 0])).astype(F32))

    def temperature(self) -> jnp.ndarray:
        """The scalar float32 temperature tau."""
        if self.learn_temperature:
            return jnp.exp(self.log_temperature)
        return jnp.asarray(self.init_temperature, jnp.float32)

    def __call__(
        self,
        images: jnp.ndarray,
        input_ids: jnp.ndarray,
        attention_mask: jnp.ndarray,
        *,
        train: bool = False,
    ) -> dict[str, jax.Array]:
        """Embeds a batch of images and a batch of texts (the two batch sizes may differ).

        Args:
          images: [B, image_size, image_size, 3] float32, normalised with BLIP_MEAN/BLIP_STD.
          input_ids: [B', L] int token ids, L <= text.max_position_embeddings.
          attention_mask: [B', L], 1 = token, 0 = padding.
          train: apply dropout.

        Returns:
          {"image_embed": [B, E], "text_embed": [B', E] (float32, unit L2 norm),
           "temperature": scalar float32 tau}; logits are image_embed @ text_embed.T / tau.
        """
        return {
            "image_embed": self.encode_image(images, train=train),
            "text_embed": self.encode_text(input_ids, attention_mask, train=train),
            "temperature": self.temperature(),
        }
