"""`flickr8k`: the Flickr8k layout `Images/` + `captions.txt`, with its official splits."""

from __future__ import annotations

import os

import ml_collections

from dllab_jax import registry
from dllab_jax.data.checks import (
    check_split,
    holdout_range,
    image_size_key,
    require_dir,
    require_file,
    root_folder,
)
from dllab_jax.data.readers import caption_files
from dllab_jax.data.readers.voc import read_voc_ids

SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
_LAYOUT = "the folder holding Images/ and captions.txt"


def _split_file(root: str, split: str) -> str | None:
    """The official split file of `split`, if the official files are there (in root or in
    root/Flickr8k_text, where the original archive puts them)."""
    for folder in (root, os.path.join(root, "Flickr8k_text")):
        if any(os.path.isfile(os.path.join(folder, f)) for f in SPLIT_FILES.values()):
            return require_file(
                os.path.join(folder, SPLIT_FILES[split]),
                f"the official split files in {folder} are incomplete",
            )
    return None


@registry.data_sources.register("flickr8k")
def make_flickr8k(
    data_config: ml_collections.ConfigDict, split: str
) -> caption_files.CaptionFileSource:
    """Flickr8k: `root/Images/*.jpg` and `root/captions.txt` (CSV 'image,caption', five rows
    per image).

    Splits: the official `Flickr_8k.{train,dev,test}Images.txt` if they are in root (or
    root/Flickr8k_text); otherwise the captioned images sorted by name, the last `num_test`
    for 'test', the `num_val` before them for 'val' and the rest for 'train'.

    Reads `root`, `image_size` (int or (H, W), default 384; bilinear resize on read),
    `num_val` / `num_test` (defaults 1000 / 1000; only without the official files),
    `skip_uncaptioned` (default False) and `captions_per_image` (K; default: the most any
    image of the split has).
    """
    check_split("flickr8k", split)
    root = root_folder(
        data_config, f"{_LAYOUT} for 'flickr8k'", "flickr8k", f"set config.data.root to {_LAYOUT}"
    )
    image_size = image_size_key(data_config, 384)
    image_dir = require_dir(
        os.path.join(root, "Images"), "the flickr8k layout is root/Images/*.jpg"
    )
    captions_file = require_file(
        os.path.join(root, "captions.txt"), "the flickr8k layout has root/captions.txt"
    )
    by_name = caption_files.read_flickr_captions(captions_file)
    split_file = _split_file(root, split)
    if split_file is not None:
        names = read_voc_ids(split_file)  # one file name a line, as VOC's id lists
        names = caption_files.captioned_subset(
            names, by_name, data_config, split_file, captions_file
        )
    else:
        names = sorted(n for n, c in by_name.items() if c)
        start, stop = holdout_range(
            data_config,
            split,
            len(names),
            1000,
            lambda num_val, num_test: (
                f"{captions_file} has {len(names)} captioned images, not more than num_val + "
                f"num_test = {num_val + num_test}; lower config.data.num_val / num_test"
            ),
        )
        names = names[start:stop]
    return caption_files.caption_file_source(
        data_config, image_dir, names, names, by_name, image_size
    )
