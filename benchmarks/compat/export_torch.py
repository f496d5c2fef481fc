"""Build a torchvision or timm model with seeded random weights (BatchNorm statistics randomized),
record its outputs and export it with the TorchScript (`dynamo=False`) or the dynamo exporter.

Run in the torch venv: `python export_torch.py FAMILY NAME torchscript|dynamo OUTDIR`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from catalog import CLASSES, Arch
from common import inputs, large_reference, run, save_reference, window_map
from torch import nn


def build(arch: Arch) -> nn.Module:
    if arch.family == "timm":
        import timm

        model = timm.create_model(arch.factory, pretrained=False, num_classes=CLASSES, **arch.kwargs)
    else:
        import torchvision

        model = getattr(torchvision.models, arch.factory)(weights=None, num_classes=CLASSES, **arch.kwargs)
    randomize_norms(model, arch)
    return model


def randomize_norms(model: nn.Module, arch: Arch) -> None:
    """BatchNorm away from the identity: random affine parameters, then statistics measured on a batch
    of random images (so activations stay well scaled through a deep random network and the outputs
    depend on the input), then perturbed. Gains below 1 keep deep residual networks (EfficientNet)
    out of the chaotic regime where float32 rounding alone changes the logits by percents."""
    gen = torch.Generator().manual_seed(1)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    with torch.no_grad():
        for module in norms:
            c = module.running_mean.shape[0]
            if module.weight is not None:
                module.weight.copy_(0.2 + 0.3 * torch.rand(c, generator=gen))
                module.bias.copy_(0.1 * torch.randn(c, generator=gen))
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one batch gives its own statistics
        if norms:
            model.train()
            model(torch.randn(8, 3, *arch.size, generator=gen))
        for module in norms:
            c = module.running_mean.shape[0]
            module.running_mean.add_(0.05 * module.running_var.sqrt() * torch.randn(c, generator=gen))
            module.running_var.mul_(0.9 + 0.2 * torch.rand(c, generator=gen))
    model.eval()


def split(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Backbone and flattened head of torchvision's AlexNet/VGG (the adaptive pool is the identity at
    the exported size and is exported as such)."""
    return model.features, nn.Sequential(nn.Flatten(1), model.classifier)


def outputs(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t.detach().numpy().astype(np.float32) for t in items]


def export(arch: Arch, exporter: str, out: Path) -> dict:
    torch.manual_seed(0)
    model = build(arch)
    x1, x2, xl = (torch.from_numpy(a) for a in inputs(arch, channels_last=False))
    with torch.no_grad():
        arrays = {"x_one": x1.numpy(), "x_small": x2.numpy(), "x_large": xl.numpy()}
        arrays.update({f"y_small_{k}": y for k, y in enumerate(outputs(model(x2)))})
        arrays.update({f"y_one_{k}": y for k, y in enumerate(outputs(model(x1)))})

        def windows() -> np.ndarray:
            backbone, head = split(model)
            window = tuple(backbone(x1).shape[2:4])
            return window_map(backbone(xl).numpy(), window, lambda f: head(torch.from_numpy(f)).numpy(), False)

        arrays.update(large_reference(arch, lambda: outputs(model(xl)), windows))
    save_reference(out, arrays)
    path = out / "model.onnx"
    if exporter == "torchscript":
        torch.onnx.export(model, (x1,), str(path), dynamo=False, input_names=["input"])
    else:
        torch.onnx.export(model, (x1,), str(path), dynamo=True)
    import torchvision

    versions = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    if arch.family == "timm":
        import timm

        versions["timm"] = timm.__version__
    return {"versions": versions, "layout": "NCHW"}


if __name__ == "__main__":
    run(export)
