"""`voc_captions`: PASCAL VOC 2012 images with captions from a JSON file (the course handout)."""

from __future__ import annotations

import os

import ml_collections

from dllab_jax import registry
from dllab_jax.data.checks import (
    check_split,
    image_size_key,
    require_dir,
    require_file,
    root_folder,
)
from dllab_jax.data.readers import caption_files
from dllab_jax.data.readers.voc import VOC_SPLIT_LISTS, read_voc_ids
from dllab_jax.errors import UserError

_LAYOUT = "the VOCdevkit/VOC2012 folder"


@registry.data_sources.register("voc_captions")
def make_voc_captions(
    data_config: ml_collections.ConfigDict, split: str
) -> caption_files.CaptionFileSource:
    """PASCAL VOC 2012 segmentation images with captions from a JSON file.

    Layout: `data_config.root` is the `VOCdevkit/VOC2012` folder, with `JPEGImages/<id>.jpg`
    and `ImageSets/Segmentation/{train,val}.txt`; `data_config.captions_json` maps each id
    (optionally with '.jpg') to a caption or a list of captions. Split 'train' reads the ids
    of train.txt, 'val' those of val.txt; 'test' is val again, since VOC publishes no test
    annotations.

    Reads `root`, `captions_json`, `image_size` (int or (H, W), default 384 as BLIP;
    images are resized bilinearly as they are read), `skip_uncaptioned` (default False: ids
    without a caption are an error) and `captions_per_image` (K; default: the most any
    image of the split has).
    """
    check_split("voc_captions", split)
    root = root_folder(
        data_config,
        f"{_LAYOUT} for 'voc_captions'",
        "voc_captions",
        f"set config.data.root to {_LAYOUT}",
    )
    image_size = image_size_key(data_config, 384)
    image_dir = require_dir(os.path.join(root, "JPEGImages"), f"config.data.root must be {_LAYOUT}")
    list_file = require_file(
        os.path.join(root, "ImageSets", "Segmentation", f"{VOC_SPLIT_LISTS[split]}.txt"),
        f"config.data.root must be {_LAYOUT}",
    )
    ids = read_voc_ids(list_file)
    captions_json = data_config.get("captions_json", None)
    if not captions_json:
        raise UserError(
            "config.data.captions_json is not set; point it at the JSON file mapping VOC "
            "image ids to captions"
        )
    captions_json = os.path.expanduser(str(captions_json))
    by_id = caption_files.read_caption_json(captions_json)
    ids = caption_files.captioned_subset(ids, by_id, data_config, list_file, captions_json)
    files = [f"{i}.jpg" for i in ids]
    return caption_files.caption_file_source(data_config, image_dir, ids, files, by_id, image_size)
