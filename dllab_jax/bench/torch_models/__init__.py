"""Plain-PyTorch references of the Flax models, for timing the same network in both frameworks.

`build_torch_model(name, **kwargs)` takes a name in `dllab_jax.registry.models` and the Flax
model's constructor arguments (`config.model` without `name`, plus what the task adds, such
as `num_classes`) and returns the reference as a `torch.nn.Module`. Inputs are NCHW; outputs
are [B, num_classes] logits or NCHW maps at the input size. With bench/torch_side.py, this
package is the only part of dllab_jax that imports torch (the optional `convert` extra);
`transformers` PyTorch models serve where Hugging Face already has the network (the DINO
ViT, SegFormer).

What each reference mirrors (the Flax module named in brackets):

  TorchLinearClassifier    one Linear on the flattened image [cnn.LinearClassifier]
  TorchCNN                 per width 2x (conv3x3 no bias, BN, ReLU), maxpool 2; GAP, dropout,
                           Linear [cnn.CNN]
  TorchResNet18            torchvision's resnet18 with our CIFAR stem option [resnet.ResNet18]
  TorchVisionTransformer   the UvA tutorial 11 ViT [vit.ViT]
  TorchUNet                DoubleConv encoder / 2x2 transposed-conv decoder [unet.UNet]
  TorchFCN32               TorchResNet18Backbone, 1x1 convs, x32 bilinear-initialised
                           transposed conv [fcn.FCN32]
  TorchContextUnet         the DeepLearning.AI / TeaPearce ContextUnet with one context MLP per
                           concept [context_unet.ContextUnet]
  TorchConvHead, TorchTransformerHead   the segmentation heads [seg_heads.ConvHead,
                           seg_heads.TransformerHead]
  TorchFrozenBackboneSegmenter   HF `ViTModel` (the DINO ViT) + a head + bilinear upsampling
                           [seg_heads.FrozenBackboneSegmenter]
  TorchSegFormer           HF `SegformerForSemanticSegmentation` + bilinear upsampling to the
                           input size [segformer.SegFormer]

Parameter counts are equal because every layer of the Flax model has its torch counterpart
with the same shapes: a conv without bias stays without bias, every BatchNorm / LayerNorm /
GroupNorm has its affine pair, transposed convs have the bias Flax gives them. BatchNorm
running statistics are buffers here and `batch_stats` there, so neither counts them. The
frozen DINO backbone is the one place where trainable and total differ: its parameters exist
(Flax's `params` holds them too) but have `requires_grad=False`, so `count_trainable` counts
the head only. tests/bench/test_torch_models.py checks every count against `jax.eval_shape` of
the Flax model, at small sizes and at the configs' defaults.

Numerics follow the Flax models (which themselves follow PyTorch): same kernel sizes, strides,
paddings, norm epsilons, exact (erf) GELU, and bilinear resizes with half-pixel centres
(`align_corners=False`). Parameters are float32 in both; Flax's compute `dtype` has no
counterpart in a module, so it is accepted and ignored (`torch.autocast` is the equivalent,
the caller's choice). Initialisations are torch's defaults except where the Flax model fixes
values (FCN-32's bilinear upsampling kernel): they do not matter for timing.

New references name their submodules as the Flax modules name theirs, so a state-dict key is
the Flax parameter path with '.' for '/' (leaves renamed: kernel -> weight, scale -> weight,
mean / var -> running_mean / running_var). The older references (ResNet-18, ViT, ContextUnet)
keep the names of the PyTorch code they reproduce, which the Flax converters expect.

One file per family: classifiers.py (linear, CNN, ResNet-18, ViT), dense.py (U-Net, FCN-32,
SegFormer), seg_heads.py (the heads and the DINO segmenter), context_unet.py, and factory.py
(`build_torch_model`, `TORCH_MODELS`).
"""

from dllab_jax.bench.torch_models.classifiers import (
    TorchAttentionBlock,
    TorchBasicBlock,
    TorchCNN,
    TorchLinearClassifier,
    TorchResNet18,
    TorchResNet18Backbone,
    TorchVisionTransformer,
)
from dllab_jax.bench.torch_models.context_unet import TorchContextUnet
from dllab_jax.bench.torch_models.dense import (
    TorchDoubleConv,
    TorchFCN32,
    TorchSegFormer,
    TorchUNet,
)
from dllab_jax.bench.torch_models.factory import TORCH_MODELS, build_torch_model, count_trainable
from dllab_jax.bench.torch_models.seg_heads import (
    TorchConvHead,
    TorchFrozenBackboneSegmenter,
    TorchTransformerHead,
    build_head,
)

__all__ = [
    "TORCH_MODELS",
    "TorchAttentionBlock",
    "TorchBasicBlock",
    "TorchCNN",
    "TorchContextUnet",
    "TorchConvHead",
    "TorchDoubleConv",
    "TorchFCN32",
    "TorchFrozenBackboneSegmenter",
    "TorchLinearClassifier",
    "TorchResNet18",
    "TorchResNet18Backbone",
    "TorchSegFormer",
    "TorchTransformerHead",
    "TorchUNet",
    "TorchVisionTransformer",
    "build_head",
    "build_torch_model",
    "count_trainable",
]
