"""E4 end to end: the offline backbone pre-training, then a head on the frozen backbone."""

import flax
import jax
import numpy as np
import pytest

from dllab_jax import checkpoint, standins, train
from dllab_jax.config_utils import load_config


def _flat(tree):
    return flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/")


def test_offline_pretraining_trains_the_whole_vit_on_other_images():
    pretrain = load_config("configs/seg_heads.py:pretrain")
    heads = load_config("configs/seg_heads.py")
    assert (pretrain.task, pretrain.model.name) == ("segmentation", "dino_segmenter")
    assert pretrain.optimizer.trainable == ".*"  # the one freezing knob
    assert pretrain.init_from.workdir == "" and pretrain.data.seed != heads.data.seed
    assert heads.optimizer.trainable == "head/.*"
    # Offline, the heads read the shipped stand-in; smoke runs make and read a smoke backbone.
    assert heads.init_from.workdir == standins.path("seg_heads_backbone")
    assert heads.init_from.make_with == ""
    smoke = load_config("configs/seg_heads.py:smoke")
    assert smoke.init_from.make_with == "configs/seg_heads.py:pretrain,smoke"
    assert heads.init_from.source_prefix == heads.init_from.target_prefix == "backbone/"
    # The heads' backbone is the pre-trained one, field by field.
    backbone_fields = {k for k in heads.model if k != "head"}
    assert {k: heads.model[k] for k in backbone_fields} == {
        k: pretrain.model[k] for k in backbone_fields
    }


@pytest.fixture(scope="module")
def pretrained_backbone(tmp_path_factory, pretrained_params):
    workdir = tmp_path_factory.mktemp("seg_heads_pretrain")
    return pretrained_params("configs/seg_heads.py:pretrain,smoke", workdir)


@pytest.mark.slow
@pytest.mark.parametrize("head", ["conv", "shared_qk"])
def test_head_trains_on_a_bit_identical_frozen_backbone(pretrained_backbone, tmp_path, head):
    pretrain_dir, pretrained = pretrained_backbone
    config = load_config(f"configs/seg_heads.py:{head},smoke")
    config.init_from.workdir = str(pretrain_dir)
    assert config.optimizer.trainable == "head/.*" and config.empty_class_iou == "skip"
    exp = train.build_experiment(config)
    initial, _ = train.initial_state(exp, checkpoint.RunCheckpoints(tmp_path / "unused"))
    initial = _flat(initial.params)
    summary = train.train_and_evaluate(config, tmp_path)
    final, _ = checkpoint.read_variables(tmp_path, "latest", items=("params", "opt_state"))
    params = _flat(final["params"])
    backbone = [k for k in params if k.startswith("backbone/")]
    assert len(backbone) == len([k for k in pretrained if k.startswith("backbone/")]) > 40
    for name in backbone:
        np.testing.assert_array_equal(params[name], pretrained[name], err_msg=name)
    head_names = [k for k in params if k.startswith("head/")]
    assert any(not np.array_equal(params[k], initial[k]) for k in head_names)
    # AdamW keeps two moments per head parameter and nothing for the backbone.
    head_size = sum(params[k].size for k in head_names)
    state_size = sum(np.size(x) for x in jax.tree.leaves(final["opt_state"]))
    assert 2 * head_size <= state_size < 2 * head_size + 100
    assert 0.0 <= summary["metrics"]["val/miou"] <= 1.0
    assert (tmp_path / "iou_val.png").exists() and (tmp_path / "predictions_val.png").exists()


@pytest.mark.slow
def test_voc_recipe_end_to_end_on_a_tiny_voc_and_a_tiny_hf_dino(tmp_path):
    """The faithful preset on stand-ins: a tiny VOC folder in the published layout and a tiny
    random-weight transformers ViT saved as a Hugging Face folder; only sizes are shrunk."""
    import torch
    from transformers import ViTConfig, ViTModel
    from voc_stand_in import write_voc

    sizes = [(40, 56), (64, 48), (32, 32), (48, 40), (24, 60), (36, 44), (50, 30), (44, 44)]
    examples = {f"2007_{i:06d}": (h, w, (i % 21, 0, 15)) for i, (h, w) in enumerate(sizes)}
    examples["2008_000001"] = (40, 40, (3, 0, 7))
    examples["2008_000002"] = (56, 36, (0, 12, 20))
    root, _ = write_voc(
        tmp_path,
        examples,
        {"train": sorted(examples)[:8], "val": ["2008_000001", "2008_000002"]},
    )
    torch.manual_seed(0)
    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, patch_size=8)
    vit_config = ViTConfig(**tiny, intermediate_size=128, image_size=32, layer_norm_eps=1e-6)
    ViTModel(vit_config, add_pooling_layer=False).save_pretrained(tmp_path / "dino")

    config = load_config("configs/seg_heads.py:voc,transformer,smoke")
    assert (config.data.name, config.data.pad_size, config.batch_size) == (
        "voc_segmentation",
        512,
        8,
    )
    assert config.init_from.format == "dino_vit" and config.model.backbone.hidden_size == 384
    config.data.root = str(root)
    config.data.pad_size = 64
    config.augment.crop_size = 32
    config.augment.short_side_range = (32, 40)
    config.model.backbone.update(
        dict(hidden_size=32, depth=2, num_heads=2, patch_size=8, pretrain_image_size=32)
    )
    config.model.head_num_heads = 2
    config.init_from.workdir = str(tmp_path / "dino")
    summary = train.train_and_evaluate(config, tmp_path / "run")
    m = summary["metrics"]
    assert summary["step"] == 4 and 0.0 <= m["val/miou"] <= 1.0
    # The frozen backbone holds the HF folder's weights, unchanged by training.
    from dllab_jax.weights.dino import read_hf_vit

    _, published = read_hf_vit(tmp_path / "dino")
    final, _ = checkpoint.read_variables(tmp_path / "run", "latest", items=("params",))
    published, final = _flat(published["params"]), _flat(final["params"])
    assert len(published) > 20
    for name, value in published.items():
        np.testing.assert_array_equal(final[f"backbone/{name}"], value, err_msg=name)
    # 21 VOC classes; the two val images hold 6 of them, the rest are NaN under 'skip'.
    assert sum(np.isfinite(m[f"val/iou/{c}"]) for c in ("background", "aeroplane", "cat")) >= 2
