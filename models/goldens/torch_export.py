"""Build a registered torch golden model with seeded weights and export it with its exporter."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from goldens import Exporter, Golden

SEED = 0
MODULES = ("goldens.torch_heads", "goldens.torch_head_patterns", "goldens.torch_backbones", "goldens.torch_inputs")


def randomize_norms(module: nn.Module) -> None:
    """Give every BatchNorm / LayerNorm / GroupNorm non-trivial statistics and affine parameters."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n) * 0.5)
            m.running_var.copy_(torch.rand(n) * 1.5 + 0.25)
            m.weight.data.copy_(torch.rand(n) + 0.5)
            m.bias.data.copy_(torch.randn(n) * 0.2)
        elif isinstance(m, (nn.LayerNorm, nn.GroupNorm)) and m.weight is not None:
            m.weight.data.copy_(torch.rand(m.weight.shape) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape) * 0.2)


def export(golden: Golden, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Seed, build, export ``golden`` to ``path``; return the model's forward pass on numpy arrays."""
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(SEED)
    model = golden.factory()
    with torch.no_grad():
        randomize_norms(model)
    model.eval()
    x = torch.randn(golden.shape)
    common: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"], "opset_version": golden.opset}
    common.update(golden.options)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        if golden.exporter is Exporter.TORCHSCRIPT:
            axes = {"input": {0: "batch"}, "output": {0: "batch"}} if golden.dynamic_batch else None
            torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes=axes, **common)
        else:
            dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if golden.dynamic_batch else None
            torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=dyn, verbose=False, **common)
            _strip_stack_traces(path)

    def forward(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(a)).numpy()

    return forward


def _strip_stack_traces(path: Path) -> None:
    """Drop the per-node Python stack traces the dynamo exporter records: they hold this machine's
    absolute paths and make the files change whenever a factory is edited. Graph and weights stay."""
    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if "stack_trace" not in p.key]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, str(path))
