"""The architectures of the compatibility sweep: family, name, exported size, head kind.

Plain data, imported by the driver (tool venv) and by each exporter script (its framework's venv).
`head` is "global" when the framework's own forward pass runs at any size and gives the same
`[N, classes]` there (global-pool heads), "window" when the head is a flattened-map FC: then the
reference at a larger size is the framework's head on every window of its backbone's feature map.
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLASSES = 10


@dataclass(frozen=True)
class Arch:
    family: str  # torchvision | timm | keras | paddle
    name: str
    size: tuple[int, int]  # exported (height, width)
    head: str = "global"
    kwargs: dict = field(default_factory=dict)
    note: str = ""
    builder: str = ""  # the framework's factory, where `name` labels a variant of it

    @property
    def factory(self) -> str:
        return self.builder or self.name

    @property
    def larger(self) -> tuple[int, int]:
        """A larger, non-square size that keeps every stride-32 stage's parity: exported + (64, 32)."""
        return (self.size[0] + 64, self.size[1] + 32)


EXPORTERS = {
    "torchvision": ("torchscript", "dynamo"),
    "timm": ("torchscript", "dynamo"),
    "keras": ("tf2onnx",),
    "paddle": ("paddle2onnx",),
}

VENVS = {"torchvision": "torch", "timm": "torch", "keras": "tf", "paddle": "paddle"}
SCRIPTS = {
    "torchvision": "export_torch.py",
    "timm": "export_torch.py",
    "keras": "export_tf.py",
    "paddle": "export_paddle.py",
}


def _family(family: str, entries: list[tuple]) -> list[Arch]:
    out = []
    for entry in entries:
        name, size, *rest = entry
        opts = rest[0] if rest else {}
        out.append(Arch(family, name, (size, size) if isinstance(size, int) else size, **opts))
    return out


TORCHVISION = _family(
    "torchvision",
    [
        ("alexnet", 224, {"head": "window"}),
        ("vgg11", 224, {"head": "window"}),
        ("resnet18", 64),
        ("resnet50", 64),
        ("resnext50_32x4d", 64),
        ("densenet121", 64),
        ("mobilenet_v2", 64),
        ("mobilenet_v3_small", 64),
        ("mobilenet_v3_large", 64),
        ("shufflenet_v2_x0_5", 64),
        ("squeezenet1_0", 64),
        ("squeezenet1_1", 64),
        ("mnasnet0_5", 64),
        ("efficientnet_b0", 64),
        ("efficientnet_v2_s", 64),
        ("regnet_x_400mf", 64),
        ("regnet_y_400mf", 64),
        ("convnext_tiny", 64),
        ("googlenet", 64, {"kwargs": {"aux_logits": False, "init_weights": True}}),
        ("inception_v3", 128, {"kwargs": {"aux_logits": False, "init_weights": True}}),
        ("vit_b_16", 64, {"kwargs": {"image_size": 64}, "note": "class-token head, fixed token count"}),
        ("swin_t", 64),
        ("maxvit_t", 224, {"note": "window attention needs sizes divisible by 7 * 32"}),
        ("resnet34", 64),
        ("wide_resnet50_2", 64),
        ("vgg16_bn", 224, {"head": "window"}),
        ("densenet161", 64),
        ("shufflenet_v2_x1_0", 64),
        ("mnasnet1_0", 64),
        ("efficientnet_b1", 64),
        ("efficientnet_b3", 64),
        ("regnet_y_800mf", 64),
        ("regnet_x_1_6gf", 64),
        ("swin_v2_t", 64),
        ("vit_b_32", 64, {"kwargs": {"image_size": 64}, "note": "class-token head, fixed token count"}),
    ],
)

TIMM = _family(
    "timm",
    [
        ("resnet18d", 64),
        ("res2net50_14w_8s", 64),
        ("dla34", 64),
        ("dpn68", 64),
        ("hrnet_w18_small", 64),
        ("mobilenetv4_conv_small", 64),
        ("nf_resnet26", 64),
        ("eca_resnet33ts", 64),
        ("poolformer_s12", 64),
        ("tf_efficientnet_b0", 64),
        ("xception41", 96),
        ("ghostnet_100", 64),
        ("repvgg_a0", 64),
        ("cspresnet50", 64),
        ("lcnet_050", 64),
        ("mixnet_s", 64),
        ("rexnet_100", 64),
        ("convnext_atto", 64),
        ("vgg11", 224, {"note": "pre-logits ConvMlp: a 7x7 conv on the map, then a global pool"}),
        ("inception_v4", 96),
        ("inception_resnet_v2", 96),
        ("selecsls42b", 64),
        ("tresnet_m", 64, {"note": "space-to-depth stem"}),
        ("densenet121", 64),
        ("cspdarknet53", 64),
        ("ese_vovnet19b_dw", 64),
        ("hardcorenas_a", 64),
        ("fbnetc_100", 64),
        ("spnasnet_100", 64),
        ("semnasnet_050", 64),
        ("dm_nfnet_f0", 64),
        ("regnetz_b16", 64),
        ("resnetv2_50x1_bit", 64, {"note": "weight-standardized convs and GroupNorm"}),
        ("gernet_s", 64),
        ("hgnetv2_b0", 64),
        ("mobileone_s0", 64),
        ("fastvit_t8", 64),
        ("efficientvit_b0", 64),
        ("mobilevit_xxs", 64),
        ("edgenext_xx_small", 64),
        ("levit_128s", 64, {"kwargs": {"img_size": 64}, "note": "attention biases for a fixed token count"}),
        ("mixer_b16_224", 64, {"kwargs": {"img_size": 64}, "note": "token-mixing MLP over a fixed token count"}),
        ("efficientnet_lite0", 64),
        ("regnety_002", 64),
        ("mobilenetv3_large_100", 64),
        ("efficientnet_b2", 64),
        ("tinynet_a", 64),
        ("mnasnet_small", 64),
        ("resnest14d", 64, {"note": "split attention (radix 2)"}),
        ("skresnet18", 64, {"note": "selective kernel"}),
        ("res2next50", 64),
        ("gcresnet33ts", 64, {"note": "global context attention"}),
        ("botnet26t_256", 64, {"kwargs": {"img_size": 64}, "note": "self-attention with position embeddings"}),
        ("ghostnetv2_100", 64),
        ("repvit_m0_9", 64),
        ("mobilevitv2_050", 64),
    ],
)

KERAS = _family(
    "keras",
    [
        ("VGG16", 64, {"head": "window"}),
        ("ResNet50", 64),
        ("ResNet50V2", 64),
        ("MobileNet", 64),
        ("MobileNetV2", 64),
        ("MobileNetV3Small", 64),
        ("EfficientNetB0", 64),
        ("EfficientNetV2B0", 64),
        ("DenseNet121", 64),
        ("Xception", 96),
        ("NASNetMobile", 64),
        ("InceptionV3", 96),
        ("ConvNeXtTiny", 64),
        ("RegNetX002", 64),
        ("VGG19", 64, {"head": "window"}),
        ("ResNet101", 64),
        ("DenseNet169", 64),
        ("InceptionResNetV2", 96),
        ("MobileNetV3Large", 64),
        ("EfficientNetV2S", 64),
        ("ResNet101V2", 64),
        ("DenseNet201", 64),
        ("EfficientNetB1", 64),
        ("EfficientNetB3", 64),
        ("EfficientNetV2B1", 64),
        ("EfficientNetV2B3", 64),
        ("MobileNetV3SmallMinimalistic", 64, {"builder": "MobileNetV3Small", "kwargs": {"minimalistic": True}}),
        ("RegNetY002", 64),
        ("ConvNeXtSmall", 64),
        (
            "ResNet50MaxPoolDense",
            64,
            {"builder": "ResNet50", "kwargs": {"include_top": False, "pooling": "max"}, "note": "own Dense head"},
        ),
    ],
)

PADDLE = _family(
    "paddle",
    [
        ("alexnet", 224, {"head": "window"}),
        ("vgg11", 224, {"head": "window"}),
        ("resnet18", 64),
        ("resnet50", 64),
        ("resnext50_32x4d", 64),
        ("mobilenet_v1", 64),
        ("mobilenet_v2", 64),
        ("mobilenet_v3_small", 64),
        ("shufflenet_v2_x0_25", 64),
        ("shufflenet_v2_swish", 64),
        ("squeezenet1_0", 64),
        ("densenet121", 64),
        ("googlenet", 224, {"note": "three outputs: main head behind a global pool, two flattened aux heads"}),
        ("inception_v3", 128),
        ("vgg16", 224, {"head": "window"}),
        ("mobilenet_v3_large", 64),
        ("shufflenet_v2_x1_0", 64),
        ("wide_resnet50_2", 64),
        ("resnet101", 64),
        ("mobilenet_v3_small_x0_5", 64, {"builder": "mobilenet_v3_small", "kwargs": {"scale": 0.5}}),
        ("mobilenet_v1_x0_25", 64, {"builder": "mobilenet_v1", "kwargs": {"scale": 0.25}}),
        ("shufflenet_v2_x2_0", 64),
        ("resnet152", 64),
        ("vgg19", 224, {"head": "window"}),
        ("densenet161", 64),
        ("squeezenet1_1", 64),
    ],
)

ARCHS: list[Arch] = TORCHVISION + TIMM + KERAS + PADDLE


def find(family: str, name: str) -> Arch:
    for arch in ARCHS:
        if arch.family == family and arch.name == name:
            return arch
    raise KeyError(f"{family}/{name}")
