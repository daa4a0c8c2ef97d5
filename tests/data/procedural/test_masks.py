"""Label maps of rendered scenes (dllab_jax/data/procedural/masks.py): trimaps and ignore
bands, by hand."""

from __future__ import annotations

import numpy as np

from dllab_jax.data.procedural import masks


def test_trimap_border_hand_made():
    fg = np.zeros((8, 8), bool)
    fg[2:6, 2:6] = True
    trimap = masks.trimap_from_foreground(fg, 1)
    expected = np.ones((8, 8), np.int32)
    expected[1:7, 1:7] = 2  # one pixel on each side of the outline
    expected[3:5, 3:5] = 0
    np.testing.assert_array_equal(trimap, expected)
    wide = masks.trimap_from_foreground(fg, 2)
    assert np.all(wide == 2)  # a 4-pixel band swallows the 4x4 square and its 2-pixel frame
    # The ignore band of class maps marks both sides of every change of label.
    labels = np.zeros((6, 6), np.int32)
    labels[:, 3:] = 4
    edge = masks.label_boundaries(labels, 1)
    assert edge[:, 2:4].all() and not edge[:, :2].any() and not edge[:, 4:].any()
