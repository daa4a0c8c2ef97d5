"""PyTorch reference of the diffusion model: the course's ContextUnet, one context MLP per
concept (dllab_jax/models/context_unet.py)."""

from __future__ import annotations

import torch
from torch import nn


class TorchResidualConvBlock(nn.Module):
    def __init__(self, in_channels, out_channels, is_res=False):
        super().__init__()
        self.same_channels = in_channels == out_channels
        self.is_res = is_res
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, 3, 1, 1),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.conv2(x1)
        if not self.is_res:
            return x2
        return ((x + x2) if self.same_channels else (x1 + x2)) / 1.414


class TorchUnetDown(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.model = nn.Sequential(
            TorchResidualConvBlock(in_channels, out_channels),
            TorchResidualConvBlock(out_channels, out_channels),
            nn.MaxPool2d(2),
        )

    def forward(self, x):
        return self.model(x)


class TorchUnetUp(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            TorchResidualConvBlock(out_channels, out_channels),
            TorchResidualConvBlock(out_channels, out_channels),
        )

    def forward(self, x, skip):
        return self.model(torch.cat((x, skip), 1))


class TorchEmbedFC(nn.Module):
    def __init__(self, input_dim, emb_dim):
        super().__init__()
        self.input_dim = input_dim
        self.model = nn.Sequential(
            nn.Linear(input_dim, emb_dim), nn.GELU(), nn.Linear(emb_dim, emb_dim)
        )

    def forward(self, x):
        return self.model(x.view(-1, self.input_dim))


class TorchContextUnet(nn.Module):
    """The course's ContextUnet with one context MLP per concept, embeddings summed.

    `forward(x, t, concepts, drop_mask=None)`:
      x: [B, in_channels, height, height] noisy images.
      t: [B] or [B, 1] timesteps divided by T.
      concepts: one [B, d_i] tensor per concept, d_i = concept_dims[i].
      drop_mask: [B, num_concepts] or [B] bool, True swaps that concept's embeddings for its
        learned nulls `null_embed1[i]` (2F) / `null_embed2[i]` (F); only with `null_concepts`
        (classifier-free guidance, as the Flax model's).
    Returns the [B, in_channels, height, height] eps prediction.
    """

    def __init__(
        self, in_channels=3, n_feat=256, concept_dims=(2, 3, 1), height=28, null_concepts=False
    ):
        super().__init__()
        self.n_feat = n_feat
        self.init_conv = TorchResidualConvBlock(in_channels, n_feat, is_res=True)
        self.down1 = TorchUnetDown(n_feat, n_feat)
        self.down2 = TorchUnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d(height // 4), nn.GELU())
        self.timeembed1 = TorchEmbedFC(1, 2 * n_feat)
        self.timeembed2 = TorchEmbedFC(1, n_feat)
        self.contextembed1 = nn.ModuleList([TorchEmbedFC(d, 2 * n_feat) for d in concept_dims])
        self.contextembed2 = nn.ModuleList([TorchEmbedFC(d, n_feat) for d in concept_dims])
        self.null_concepts = null_concepts
        if null_concepts:
            # Zeros, as the Flax nulls start: a dropped concept initially adds nothing.
            self.null_embed1 = nn.ParameterList(
                [nn.Parameter(torch.zeros(2 * n_feat)) for _ in concept_dims]
            )
            self.null_embed2 = nn.ParameterList(
                [nn.Parameter(torch.zeros(n_feat)) for _ in concept_dims]
            )
        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4),
            nn.GroupNorm(8, 2 * n_feat),
            nn.ReLU(),
        )
        self.up1 = TorchUnetUp(4 * n_feat, n_feat)
        self.up2 = TorchUnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1),
            nn.GroupNorm(8, n_feat),
            nn.ReLU(),
            nn.Conv2d(n_feat, in_channels, 3, 1, 1),
        )

    def _concept_sum(self, embeds, nulls, concepts, drop_mask):
        total = 0
        for i, (embed, c) in enumerate(zip(embeds, concepts)):
            e = embed(c)
            if drop_mask is not None:
                e = torch.where(drop_mask[:, i : i + 1], nulls[i], e)
            total = total + e
        return total

    def forward(self, x, t, concepts, drop_mask=None):
        f = self.n_feat
        if drop_mask is not None:
            if not self.null_concepts:
                raise ValueError("drop_mask needs a model built with null_concepts=True")
            if drop_mask.ndim == 1:  # [B]: drop every concept of an example
                drop_mask = drop_mask[:, None].expand(-1, len(self.contextembed1))
        x = self.init_conv(x)
        down1 = self.down1(x)
        down2 = self.down2(down1)
        hiddenvec = self.to_vec(down2)
        nulls1 = self.null_embed1 if self.null_concepts else None
        nulls2 = self.null_embed2 if self.null_concepts else None
        cemb1 = self._concept_sum(self.contextembed1, nulls1, concepts, drop_mask)
        cemb2 = self._concept_sum(self.contextembed2, nulls2, concepts, drop_mask)
        cemb1, cemb2 = cemb1.view(-1, 2 * f, 1, 1), cemb2.view(-1, f, 1, 1)
        temb1 = self.timeembed1(t).view(-1, 2 * f, 1, 1)
        temb2 = self.timeembed2(t).view(-1, f, 1, 1)
        up1 = self.up0(hiddenvec)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        return self.out(torch.cat((up3, x), 1))
