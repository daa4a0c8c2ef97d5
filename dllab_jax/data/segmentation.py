"""Semantic segmentation sources: `image: [n, H, W, 3] uint8`, `label: [n, H, W] int32`.

255 is the ignore label everywhere (`IGNORE`).

- `scenes`: procedural scenes (no download) of one to several overlapping shapes over a
  cluttered background, built on `procedural.py`'s samplers and rasteriser. Two label sets
  (`data_config.labels`):
  * "classes" (the Cityscapes stand-in): 0 background (including the clutter strokes and
    blobs, which are never a class) and 1..10 for the ten `procedural.CLASS_KINDS`. Pixels
    within `ignore_band` pixels of a change of class (object/background or object/object
    boundaries, both sides) are 255: the anti-aliased edge pixels mix two colours, as the
    unlabelled outlines of real annotations do. `ignore_band=0` labels every pixel.
  * "trimap" (the Oxford-IIIT Pet stand-in): 0 object (any shape of a class kind), 1
    background, 2 border: every pixel whose (2r+1)x(2r+1) window (r = `trimap_border`,
    default 1) holds both object and background pixels, a band of 2r pixels centred on the
    object outline. No ignore pixels.
- `oxford_iiit_pet` (tfds): trimap 1..3 minus 1 (0 pet, 1 background, 2 border).
- `cityscapes` (tfds `cityscapes/semantic_segmentation`, manual download): the 19 train ids.
- `carla`: the CARLA folders `root/<any>/CameraRGB/*.png` + `root/<any>/CameraSeg/*.png`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import ml_collections
import numpy as np
from PIL import Image

from dllab_jax.data import procedural
from dllab_jax.data.base import ArraySource, SourceInfo, image_size_key, int_key, load_image
from dllab_jax.data.cache import cached_arrays
from dllab_jax.data.registry import register
from dllab_jax.errors import UserError

IGNORE = 255
SPLITS = ("train", "val", "test")

# --------------------------------------------------------------------------------------------
# Shared helpers.


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} for data source {name!r}; use one of {SPLITS}")


def _nearest_indices(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output cell for nearest-neighbour resizing (centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [h, w, ...] to [H, W, ...] (exact for label maps)."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    rows = _nearest_indices(h, array.shape[0])
    cols = _nearest_indices(w, array.shape[1])
    return array[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: tuple[int, int], resample: str) -> np.ndarray:
    """[h, w, 3] uint8 -> [H, W, 3] uint8 with 'nearest' or 'bilinear' (PIL, antialiased)."""
    if resample == "nearest":
        return resize_nearest(image, size)
    if resample != "bilinear":
        raise UserError(
            f"config.data.image_resample must be 'nearest' or 'bilinear', got {resample!r}"
        )
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)


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


# --------------------------------------------------------------------------------------------
# scenes: procedural multi-object segmentation.

SCENE_CLASS_NAMES: tuple[str, ...] = ("background", *procedural.CLASS_KINDS)
TRIMAP_CLASS_NAMES: tuple[str, ...] = ("object", "background", "border")
SCENE_LABEL_SETS = ("classes", "trimap")


def sample_segmentation_scene(
    rng: np.random.Generator, max_objects: int = 4, size_range: tuple[float, float] = (0.1, 0.3)
) -> procedural.Scene:
    """A `scenes` example: 1..max_objects shapes of random classes that may overlap.

    Layers, bottom to top: a textured gradient background, 2-4 strokes and 1-3 blobs
    (clutter), the shapes (each contrasting with the background's mean colour, later ones
    occluding earlier ones), and with probability 0.5 one stroke in front.
    """
    background = procedural.sample_background(rng)
    mean_bg = 0.5 * (np.asarray(background.rgb0) + np.asarray(background.rgb1))
    behind = procedural.sample_distractors(rng, int(rng.integers(2, 5)), int(rng.integers(1, 4)))
    num = int(rng.integers(1, max_objects + 1))
    shapes = []
    for _ in range(num):
        kind = procedural.CLASS_KINDS[int(rng.integers(len(procedural.CLASS_KINDS)))]
        rgb = procedural.contrasting_rgb(rng, mean_bg, 0.35)
        shapes.append(procedural.sample_object(rng, kind, rgb, size_range=size_range))
    front = procedural.sample_distractors(rng, int(rng.random() < 0.5), 0)
    return procedural.Scene(background, (*behind, *shapes, *front))


def class_maps(scenes: Sequence[procedural.Scene], visible: np.ndarray) -> np.ndarray:
    """[n, H, W] int32 classes from the rasteriser's visible-object map.

    0 = background or clutter, 1 + CLASS_KINDS.index(kind) for shapes of a class kind.
    """
    n = len(scenes)
    width = max(len(s.objects) for s in scenes) + 1 if n else 1
    lut = np.zeros((n, width), np.int32)  # column 0 is "no object" (visible == -1)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene.objects):
            if obj.kind in procedural.CLASS_KINDS:
                lut[i, j + 1] = 1 + procedural.CLASS_KINDS.index(obj.kind)
    return lut[np.arange(n)[:, None, None], visible + 1]


@functools.lru_cache(maxsize=8)
@cached_arrays  # and on disk, across runs (dllab_jax/data/cache.py)
def generate_scenes(
    seed: int, split: str, num_examples: int, image_size: tuple[int, int], max_objects: int
) -> dict[str, np.ndarray]:
    """Images and class maps (no ignore) of `scenes` examples 0..n-1, cached, read-only."""
    sampler = functools.partial(sample_segmentation_scene, max_objects=max_objects)
    scenes, images, visible = procedural.render_split(
        sampler, seed, split, num_examples, image_size
    )
    classes = class_maps(scenes, visible) if num_examples else visible
    images.setflags(write=False)
    classes.setflags(write=False)
    return {"image": images, "classes": classes}


def scene_labels(classes: np.ndarray, labels: str, ignore_band: int, trimap_border: int):
    """Labels of one label set from class maps [n, H, W] (see the module docstring)."""
    if labels == "classes":
        out = classes.astype(np.int32, copy=True)
        out[label_boundaries(classes, ignore_band)] = IGNORE
        return out
    if labels == "trimap":
        return trimap_from_foreground(classes > 0, trimap_border)
    raise UserError(f"config.data.labels must be one of {SCENE_LABEL_SETS}, got {labels!r}")


@register("scenes")
def make_scenes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """The procedural `scenes` segmentation source.

    Reads `seed` (0), `image_size` (64), `num_train` / `num_val` / `num_test`
    (10000 / 1000 / 1000), `labels` ('classes' or 'trimap'), `max_objects` (4),
    `ignore_band` (1; classes only) and `trimap_border` (1; trimap only).
    """
    _check_split("scenes", split)
    seed = int_key(data_config, "seed", 0, 0)
    num = int_key(
        data_config, f"num_{split}", {"train": 10000, "val": 1000, "test": 1000}[split], 0
    )
    h, w = image_size_key(data_config, 64, minimum=8)
    max_objects = int_key(data_config, "max_objects", 4, 1)
    ignore_band = int_key(data_config, "ignore_band", 1, 0)
    trimap_border = int_key(data_config, "trimap_border", 1, 0)
    labels = data_config.get("labels", "classes")
    if labels not in SCENE_LABEL_SETS:
        raise UserError(f"config.data.labels must be one of {SCENE_LABEL_SETS}, got {labels!r}")
    arrays = generate_scenes(seed, split, num, (h, w), max_objects)
    label = scene_labels(arrays["classes"], labels, ignore_band, trimap_border)
    names = SCENE_CLASS_NAMES if labels == "classes" else TRIMAP_CLASS_NAMES
    info = SourceInfo(num_classes=len(names), class_names=names, image_shape=(h, w, 3))
    return ArraySource({"image": arrays["image"], "label": label}, info)


# --------------------------------------------------------------------------------------------
# Oxford-IIIT Pet (tfds).

PET_CLASS_NAMES = ("pet", "background", "border")
PET_SPLITS = {"train": "train", "val": "test", "test": "test"}

# Trimap value -> label: 1 pet -> 0, 2 background -> 1, 3 border -> 2, anything else (only
# under tfds mock data) -> ignore.
_PET_LUT = np.full(256, IGNORE, np.int32)
_PET_LUT[1:4] = (0, 1, 2)


def pet_example_fn(image_size: tuple[int, int], resample: str = "nearest"):
    """Per-example function for load_tfds_arrays: resizes image and trimap to `image_size`."""

    def fn(ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = np.asarray(ex["segmentation_mask"])
        if mask.ndim == 3:
            mask = mask[..., 0]
        return {
            "image": resize_image(np.asarray(ex["image"], np.uint8), image_size, resample),
            "label": _PET_LUT[resize_nearest(mask, image_size).astype(np.int64)],
        }

    return fn


def _tfds_split(data_config: ml_collections.ConfigDict, name: str, split: str, defaults) -> str:
    _check_split(name, split)
    return data_config.get(f"{split}_split", defaults[split])


@register("oxford_iiit_pet")
def make_oxford_iiit_pet(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """Oxford-IIIT Pet trimaps from tfds, held in memory.

    Reads `data_dir` (None: tfds default), `download` (False), `image_size` (64),
    `image_resample` ('nearest' as the handout; or 'bilinear'; masks are always nearest) and
    `train_split` / `val_split` / `test_split` (defaults 'train' (trainval, 3680), 'test',
    'test').
    """
    from dllab_jax.data.tfds_sources import load_tfds_arrays

    tfds_split = _tfds_split(data_config, "oxford_iiit_pet", split, PET_SPLITS)
    size = image_size_key(data_config, 64)
    arrays, _ = load_tfds_arrays(
        "oxford_iiit_pet",
        tfds_split,
        data_dir=data_config.get("data_dir", None),
        download=bool(data_config.get("download", False)),
        keys=("image", "segmentation_mask"),
        example_fn=pet_example_fn(size, data_config.get("image_resample", "nearest")),
    )
    info = SourceInfo(
        num_classes=len(PET_CLASS_NAMES), class_names=PET_CLASS_NAMES, image_shape=(*size, 3)
    )
    return ArraySource(
        {"image": arrays["image"].astype(np.uint8), "label": arrays["label"].astype(np.int32)},
        info,
    )


# --------------------------------------------------------------------------------------------
# Cityscapes (tfds, manual download).

CITYSCAPES_CLASS_NAMES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
# Cityscapes label id (gtFine *_labelIds.png) -> train id; every other id (0-6 void, 9
# parking, 10 rail track, 14-16 guard rail/bridge/tunnel, 18 polegroup, 29 caravan,
# 30 trailer, -1/255 license plate) -> 255.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
_CITYSCAPES_LUT = np.full(256, IGNORE, np.int32)
for _id, _train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
    _CITYSCAPES_LUT[_id] = _train_id
CITYSCAPES_SPLITS = {"train": "train", "val": "validation", "test": "validation"}
CITYSCAPES_TFDS_NAME = "cityscapes/semantic_segmentation"


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Maps Cityscapes label ids (any integer array) to the 19 train ids, 255 = ignore."""
    ids = np.asarray(label_ids).astype(np.int64)
    out = np.full(ids.shape, IGNORE, np.int32)
    valid = (ids >= 0) & (ids < 256)
    out[valid] = _CITYSCAPES_LUT[ids[valid]]
    return out


def cityscapes_example_fn(image_size: tuple[int, int], resample: str = "nearest"):
    def fn(ex: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        label = np.asarray(ex["segmentation_label"])
        if label.ndim == 3:
            label = label[..., 0]
        return {
            "image": resize_image(np.asarray(ex["image_left"], np.uint8), image_size, resample),
            "label": cityscapes_train_ids(resize_nearest(label, image_size)),
        }

    return fn


def _prepare_cityscapes(data_dir: str | None, manual_dir: str) -> None:
    from dllab_jax.data.tfds_sources import _import_tfds, tfds_builder

    tfds = _import_tfds()
    builder = tfds_builder(CITYSCAPES_TFDS_NAME, data_dir, download=False)
    if builder.is_prepared():
        return
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except Exception as e:
        raise UserError(
            f"could not prepare {CITYSCAPES_TFDS_NAME} from manual_dir {manual_dir}: "
            f"{type(e).__name__}: {e}. Put leftImg8bit_trainvaltest.zip and "
            "gtFine_trainvaltest.zip (from https://www.cityscapes-dataset.com, login needed) "
            "there"
        ) from e


@register("cityscapes")
def make_cityscapes(data_config: ml_collections.ConfigDict, split: str) -> ArraySource:
    """Cityscapes (fine annotations) from tfds, 19 train ids, held in memory.

    Reads `data_dir` (None: tfds default), `manual_dir` (the folder with the downloaded
    leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; when set and the data set is not
    prepared, it is prepared from there), `image_size` (64), `image_resample` ('nearest', or
    'bilinear'; labels are always nearest) and `train_split` / `val_split` / `test_split`
    (defaults 'train', 'validation', 'validation': the test labels are not public).
    """
    from dllab_jax.data.tfds_sources import load_tfds_arrays

    tfds_split = _tfds_split(data_config, "cityscapes", split, CITYSCAPES_SPLITS)
    size = image_size_key(data_config, 64)
    data_dir = data_config.get("data_dir", None)
    manual_dir = data_config.get("manual_dir", None)
    if manual_dir:
        _prepare_cityscapes(data_dir, os.path.expanduser(str(manual_dir)))
    try:
        arrays, _ = load_tfds_arrays(
            CITYSCAPES_TFDS_NAME,
            tfds_split,
            data_dir=data_dir,
            download=False,
            keys=("image_left", "segmentation_label"),
            example_fn=cityscapes_example_fn(size, data_config.get("image_resample", "nearest")),
        )
    except UserError as e:
        if "not prepared" not in str(e):
            raise
        raise UserError(
            f"Cityscapes is not prepared (tfds {CITYSCAPES_TFDS_NAME}, data_dir "
            f"{data_dir or 'tfds default'}). It needs a manual download: get "
            "leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from "
            "https://www.cityscapes-dataset.com (login needed), put them in a folder and set "
            "config.data.manual_dir to it (tfds prepares the data on the next run)"
        ) from None
    info = SourceInfo(
        num_classes=len(CITYSCAPES_CLASS_NAMES),
        class_names=CITYSCAPES_CLASS_NAMES,
        image_shape=(*size, 3),
    )
    return ArraySource(
        {"image": arrays["image"].astype(np.uint8), "label": arrays["label"].astype(np.int32)},
        info,
    )


# --------------------------------------------------------------------------------------------
# CARLA (folders, read lazily).

CARLA_NUM_CLASSES = 13
CARLA_CLASS_NAMES = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)


def carla_pairs(root: str) -> list[tuple[str, str]]:
    """(rgb, mask) paths under root/<any>/CameraRGB|CameraSeg (or root/CameraRGB|CameraSeg),
    sorted by file name, then folder. Masks without an image (and vice versa) are skipped.
    """
    subfolders = sorted(
        e.path for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
    )
    folders = [root, *subfolders]
    pairs = []
    for folder in folders:
        rgb_dir = os.path.join(folder, "CameraRGB")
        seg_dir = os.path.join(folder, "CameraSeg")
        if not (os.path.isdir(rgb_dir) and os.path.isdir(seg_dir)):
            continue
        for e in os.scandir(rgb_dir):
            if e.is_file() and e.name.lower().endswith(".png"):
                mask = os.path.join(seg_dir, e.name)
                if os.path.isfile(mask):
                    pairs.append((e.name, folder, e.path, mask))
    pairs.sort()
    return [(rgb, mask) for _, _, rgb, mask in pairs]


def read_carla_pair(
    rgb_path: str, mask_path: str, image_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """A CameraRGB / CameraSeg pair as ([H, W, 3] uint8, [H, W] int32).

    The image is resized bilinearly, the mask's red channel (the class id) nearest; ids >= 13
    become 255. A mask of another size than its image is an error, not resized to fit: the
    two would no longer describe the same pixels.
    """
    from dllab_jax.data.folder import read_image

    h, w = image_size
    with load_image(mask_path) as mask, load_image(rgb_path) as rgb:
        if mask.size != rgb.size:
            raise UserError(
                f"{mask_path} is {mask.size[1]}x{mask.size[0]} pixels but its image {rgb_path} "
                f"is {rgb.size[1]}x{rgb.size[0]}; a CameraSeg mask must match its CameraRGB image"
            )
        red = mask.convert("RGB").getchannel("R")
    if red.size != (w, h):
        red = red.resize((w, h), Image.Resampling.NEAREST)
    ids = np.asarray(red, dtype=np.int32)
    labels = np.where(ids < CARLA_NUM_CLASSES, ids, IGNORE).astype(np.int32)
    return read_image(rgb_path, image_size), labels


class CarlaSource:
    """One CARLA split: file pairs in memory, pixels read by `get`."""

    def __init__(self, pairs: Sequence[tuple[str, str]], info: SourceInfo):
        self.pairs = list(pairs)
        self.info = info

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        h, w, _ = self.info.image_shape
        images = np.empty((len(indices), h, w, 3), np.uint8)
        labels = np.empty((len(indices), h, w), np.int32)
        for i, index in enumerate(indices):
            images[i], labels[i] = read_carla_pair(*self.pairs[index], (h, w))
        return {"image": images, "label": labels}


@register("carla")
def make_carla(data_config: ml_collections.ConfigDict, split: str) -> CarlaSource:
    """The CARLA segmentation folders, split by sorted file name.

    Reads `root` (holding data*/CameraRGB and data*/CameraSeg), `image_size` ((320, 416) =
    (H, W); images bilinear, masks nearest) and `num_val` / `num_test` (500 / 500): after
    sorting all pairs by file name, the last num_test are 'test', the num_val before them
    'val', the rest 'train'.
    """
    _check_split("carla", split)
    root = data_config.get("root", None)
    if not root:
        raise UserError(
            "config.data.root is not set; point it at the CARLA folder holding "
            "data*/CameraRGB/*.png and data*/CameraSeg/*.png"
        )
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise UserError(f"CARLA root {root} does not exist; set config.data.root")
    pairs = carla_pairs(root)
    if not pairs:
        raise UserError(
            f"CARLA root {root} has no image/mask pairs; expected {root}/<any>/CameraRGB/*.png "
            "with masks of the same names in CameraSeg/"
        )
    size = image_size_key(data_config, (320, 416))
    num_val = int_key(data_config, "num_val", 500, 0)
    num_test = int_key(data_config, "num_test", 500, 0)
    num_train = len(pairs) - num_val - num_test
    if num_train < 1:
        raise UserError(
            f"CARLA root {root} has {len(pairs)} pairs, not enough for num_val={num_val} and "
            f"num_test={num_test} plus training data; lower config.data.num_val/num_test"
        )
    bounds = {
        "train": (0, num_train),
        "val": (num_train, num_train + num_val),
        "test": (num_train + num_val, len(pairs)),
    }[split]
    info = SourceInfo(
        num_classes=CARLA_NUM_CLASSES, class_names=CARLA_CLASS_NAMES, image_shape=(*size, 3)
    )
    return CarlaSource(pairs[bounds[0] : bounds[1]], info)
