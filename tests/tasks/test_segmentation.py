"""E2/E3 segmentation task end to end (a config trained for a few steps): the U-Net run's
metrics and figures, the SegFormer fine-tuning strategies and backbone reuse for FCN-32.
The metrics on hand-made cases are in tests/evaluators/test_iou.py."""

import flax
import jax
import numpy as np
import pytest

from dllab_jax import checkpoint, train
from dllab_jax.config_utils import load_config


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, override):
    workdir = tmp_path_factory.mktemp("unet")
    config = override(
        "configs/segmentation.py:smoke",
        num_train_steps=24,
        eval_every_steps=12,
        log_every_steps=4,
        **{"data.num_train": 64, "optimizer.learning_rate": 3e-3},
    )
    return workdir, train.train_and_evaluate(config, workdir)


@pytest.mark.slow
def test_segmentation_run_reports_miou_per_class_iou_and_figures(unet_run):
    workdir, summary = unet_run
    names = ("background", "circle", "triangle", "square", "pentagon", "hexagon", "star")
    for split in ("val", "test"):
        m = summary["metrics"]
        ious = [m[f"{split}/iou/{name}"] for name in names]
        assert all(0.0 <= v <= 1.0 for v in ious)
        assert 0.0 <= m[f"{split}/miou"] <= 1.0
        assert m[f"best/{split}/miou"] >= 0.0
    for figure in ("iou_val.png", "iou_test.png", "predictions_val.png", "curves.png"):
        assert (workdir / figure).stat().st_size > 5000, figure


@pytest.mark.slow
def test_segmentation_loss_goes_down(unet_run, run_files):
    workdir, _ = unet_run
    losses = [r["train/loss"] for r in run_files.history(workdir) if "train/loss" in r]
    assert losses[-1] < 0.8 * losses[0], losses
    # Background is ~75% of the labelled pixels; a random U-Net labels ~1/11 of them right.
    # (Training-mode accuracy: after 24 steps BatchNorm's running averages still lag.)
    accuracy = [r["train/pixel_accuracy"] for r in run_files.history(workdir) if "train/loss" in r]
    assert accuracy[-1] > 0.6 > accuracy[0], accuracy


def _flat(tree):
    return flax.traverse_util.flatten_dict(jax.device_get(tree), sep="/")


@pytest.fixture(scope="module")
def segformer_pretrain(tmp_path_factory, pretrained_params):
    workdir = tmp_path_factory.mktemp("segformer_pretrain")
    return pretrained_params("configs/segformer.py:pretrain,smoke", workdir)


def _finetune(override, strategy, pretrain_dir, workdir):
    config = override(
        f"configs/segformer.py:{strategy},smoke", **{"init_from.workdir": str(pretrain_dir)}
    )
    exp = train.build_experiment(config)
    state, _ = train.initial_state(exp, checkpoint.RunCheckpoints(workdir))
    train.train_and_evaluate(config, workdir)
    final, _ = checkpoint.read_variables(workdir, "latest", items=("params", "opt_state"))
    return exp, _flat(state.params), _flat(final["params"]), final["opt_state"]


@pytest.mark.slow
def test_finetune_loads_the_encoder_and_trains_everything(segformer_pretrain, tmp_path, override):
    pretrain_dir, pretrained = segformer_pretrain
    _, initial, final, _ = _finetune(override, "finetune", pretrain_dir, tmp_path)
    encoder = [k for k in initial if k.startswith("encoder/")]
    assert len(encoder) > 50
    for name in encoder:
        np.testing.assert_array_equal(initial[name], pretrained[name], err_msg=name)
    # The head has 3 classes here, 11 in pre-training: it starts fresh.
    assert initial["decode_head/classifier/kernel"].shape[-1] == 3
    assert pretrained["decode_head/classifier/kernel"].shape[-1] == 11
    assert not np.array_equal(
        final["encoder/patch_embed1/proj/kernel"], pretrained["encoder/patch_embed1/proj/kernel"]
    )


@pytest.mark.slow
def test_finetune_frozen_keeps_the_encoder_bit_identical_and_no_state_for_it(
    segformer_pretrain, tmp_path, override
):
    pretrain_dir, pretrained = segformer_pretrain
    _, initial, final, opt_state = _finetune(override, "finetune_frozen", pretrain_dir, tmp_path)
    changed_head = 0
    for name, value in final.items():
        if name.startswith("encoder/"):
            np.testing.assert_array_equal(value, pretrained[name], err_msg=name)
        else:
            changed_head += not np.array_equal(value, initial[name])
    assert changed_head > 5
    # AMSGrad keeps mu, nu and nu_max per trainable parameter, nothing for frozen ones.
    head_size = sum(v.size for k, v in final.items() if k.startswith("decode_head/"))
    state_size = sum(np.size(x) for x in jax.tree.leaves(opt_state))
    assert 3 * head_size <= state_size < 3 * head_size + 100


# ------------------------------------------------------------- FCN-32 backbone reuse
def _fcn32_initial_state(override, tmp_path, **init_from):
    config = override(
        "configs/segmentation.py:fcn32,smoke", **{f"init_from.{k}": v for k, v in init_from.items()}
    )
    exp = train.build_experiment(config)
    state, _ = train.initial_state(exp, checkpoint.RunCheckpoints(tmp_path / "fcn32"))
    return exp, state


@pytest.mark.slow
def test_fcn32_backbone_from_a_classification_checkpoint(tmp_path, override):
    """configs/segmentation.py's docstring recipe: a ResNet-18 classification run's trunk
    (parameters and BatchNorm statistics) loads into FCN-32 by name; the rest stays fresh."""
    classifier_dir = tmp_path / "classification"
    train.train_and_evaluate(
        # The offline classification ResNet-18 is narrow with the CIFAR stem; FCN-32's trunk
        # is the full imagenet-stem one, as the handout's ImageNet weights.
        override(
            "configs/classification.py:resnet18,smoke",
            num_train_steps=2,
            **{"model.width": 64, "model.stem": "imagenet"},
        ),
        classifier_dir,
    )
    source, _ = checkpoint.read_variables(classifier_dir, "best")
    exp, state = _fcn32_initial_state(
        override,
        tmp_path,
        workdir=str(classifier_dir),
        target_prefix="backbone/",
        source_prefix="backbone/",
    )
    params, source_params = _flat(state.params), _flat(source["params"])
    backbone = [k for k in params if k.startswith("backbone/")]
    assert len(backbone) == len([k for k in source_params if k.startswith("backbone/")]) == 60
    for name in backbone:
        np.testing.assert_array_equal(params[name], source_params[name], err_msg=name)
    stats = _flat(state.model_state["batch_stats"])
    source_stats = _flat(source["model_state"]["batch_stats"])
    for name, value in stats.items():
        np.testing.assert_array_equal(value, source_stats[name], err_msg=name)
    fresh = exp.init_state_fn(jax.random.key(exp.config.seed))
    np.testing.assert_array_equal(params["upsample/kernel"], _flat(fresh.params)["upsample/kernel"])


@pytest.mark.slow
def test_fcn32_backbone_from_torchvision_weights(tmp_path, override):
    """The `imagenet_backbone` preset reads a torchvision ResNet-18 file (.pth or
    .safetensors) through `init_from.format = 'torchvision_resnet18'`."""
    import torch
    from model_checks import randomise_
    from safetensors.torch import save_file

    from dllab_jax.bench.torch_models import TorchResNet18

    torch.manual_seed(0)
    model = TorchResNet18(1000)
    randomise_(model, seed=3)
    state_dict = model.state_dict()
    pth = tmp_path / "resnet18-random.pth"
    torch.save(state_dict, pth)
    safetensors = tmp_path / "resnet18-random.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(safetensors))
    conv1 = state_dict["conv1.weight"].numpy().transpose(2, 3, 1, 0)
    mean = state_dict["layer3.1.bn2.running_mean"].numpy()
    for path in (pth, safetensors):
        config = load_config("configs/segmentation.py:imagenet_backbone,smoke")
        assert config.model.name == "fcn32"
        _, state = _fcn32_initial_state(
            override,
            tmp_path,
            workdir=str(path),
            format="torchvision_resnet18",
            target_prefix="backbone/",
            source_prefix="backbone/",
        )
        np.testing.assert_array_equal(_flat(state.params)["backbone/conv1/kernel"], conv1)
        stats = _flat(state.model_state["batch_stats"])
        np.testing.assert_array_equal(stats["backbone/layer3_1/bn2/mean"], mean)


def test_missing_torchvision_file_is_a_clear_error(tmp_path, override):
    from dllab_jax.errors import UserError

    with pytest.raises(UserError, match="no torchvision ResNet-18 weights at"):
        _fcn32_initial_state(
            override, tmp_path, workdir=str(tmp_path / "nope.pth"), format="torchvision_resnet18"
        )


def test_segformer_presets_carry_the_handout_recipe():
    from dllab_jax.errors import UserError

    pets = load_config("configs/segformer.py:pets,finetune_frozen")
    assert pets.data.name == "oxford_iiit_pet" and pets.data.image_size == 64
    assert (pets.num_epochs, pets.batch_size, pets.eval_every_epochs) == (30.0, 64, 2.0)
    assert (pets.optimizer.name, pets.optimizer.learning_rate) == ("adamw", 1e-3)
    assert pets.optimizer.amsgrad and pets.optimizer.decay_rate == 0.98
    assert pets.optimizer.trainable == "decode_head/.*"
    assert tuple(pets.model.patch_sizes) == (5, 3, 3, 3) and tuple(pets.model.strides) == (2,) * 4
    assert pets.init_from.make_with == "configs/segformer.py:pretrain,cityscapes"
    city = load_config("configs/segformer.py:pretrain,cityscapes")
    assert (city.num_epochs, city.batch_size, city.data.name) == (40.0, 16, "cityscapes")
    assert load_config("configs/segformer.py:finetune_low_lr").optimizer.learning_rate == 1e-4
    with pytest.raises(UserError, match="choose one of"):
        load_config("configs/segformer.py:finetune,finetune_frozen")
