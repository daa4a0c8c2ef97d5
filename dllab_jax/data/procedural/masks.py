"""Label maps of rendered scenes: class maps from the rasteriser's visible-object map,
trimaps of a foreground, and the ignore band along label boundaries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dllab_jax.data.procedural.scene import CLASS_KINDS, Scene


def _window_any(mask: np.ndarray, radius: int) -> np.ndarray:
    """[..., H, W] bool: True where the (2r+1)^2 window (clipped at the image edge) has a True."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[..., 1:, :] |= out[..., :-1, :]
        grown[..., :-1, :] |= out[..., 1:, :]
        out = grown
        grown = out.copy()
        grown[..., :, 1:] |= out[..., :, :-1]
        grown[..., :, :-1] |= out[..., :, 1:]
        out = grown
    return out


def trimap_from_foreground(foreground: np.ndarray, border: int = 1) -> np.ndarray:
    """Trimap of a foreground mask: 0 object, 1 background, 2 border.

    Args:
      foreground: [..., H, W] bool.
      border: r >= 1; a pixel is border when its (2r+1)x(2r+1) window holds both foreground
        and background pixels (a band 2r pixels wide centred on the outline). 0: no border.

    Returns:
      [..., H, W] int32.
    """
    trimap = np.where(foreground, 0, 1).astype(np.int32)
    if border > 0:
        near_fg = _window_any(foreground, border)
        near_bg = _window_any(~foreground, border)
        trimap[near_fg & near_bg] = 2
    return trimap


def label_boundaries(labels: np.ndarray, band: int = 1) -> np.ndarray:
    """[..., H, W] bool: pixels within `band` pixels (4-neighbours, then grown) of a label change.

    band=1 marks each pixel that has a 4-neighbour of another label (one pixel on each side
    of every boundary); larger bands grow that set by band-1 pixels (Chebyshev).
    """
    edge = np.zeros(labels.shape, bool)
    if band <= 0:
        return edge
    dy = labels[..., 1:, :] != labels[..., :-1, :]
    dx = labels[..., :, 1:] != labels[..., :, :-1]
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    return _window_any(edge, band - 1)


def class_maps(scenes: Sequence[Scene], visible: np.ndarray) -> np.ndarray:
    """[n, H, W] int32 classes from the rasteriser's visible-object map.

    0 = background or clutter, 1 + CLASS_KINDS.index(kind) for shapes of a class kind.
    """
    n = len(scenes)
    width = max(len(s.objects) for s in scenes) + 1 if n else 1
    lut = np.zeros((n, width), np.int32)  # column 0 is "no object" (visible == -1)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            if obj.kind in CLASS_KINDS:
                lut[i, j + 1] = 1 + CLASS_KINDS.index(obj.kind)
    return lut[np.arange(n)[:, None, None], visible + 1]
