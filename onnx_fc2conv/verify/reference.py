"""The independent reference at a larger size, built from the *original* model without the rewrite.

With FC heads: the original backbone (the graph cut at the heads' feature maps) at the larger
size, then each original head (original weights, original Gemm semantics) on every window of its
feature map. Without FC heads: the original graph itself with every input dim left free.

A batch the original cannot run at once (a batch baked into a Reshape) is run image by image.
Where the original backbone cannot run at a larger size at all, or pins a map to its exported
size (a size the conversion made size-agnostic), the converted backbone is the reference and a
note says so; the whole-graph reference has no such stand-in and skips the check with a note.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import onnx
import onnxruntime as ort

from ..heads import Head
from ..shapes import inferred_skeleton
from .cut import cut
from .model_types import TensorType, tensor_types
from .sessions import RunError, run, run_in_chunks, session

log = logging.getLogger(__name__)


def run_batch(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], what: str) -> tuple[dict, str | None]:
    """`sess` on the whole batch, or image by image when it cannot run the batch at once.

    Returns the outputs and, when images were run one by one, a note saying so.
    """
    try:
        return run(sess, feeds, what), None
    except RunError as whole:
        n = max((v.shape[0] for v in feeds.values() if v.ndim), default=1)
        if n <= 1:
            raise
        try:
            outs = run_in_chunks(sess, feeds, what, 1)
        except RunError:
            raise whole from None
        return outs, f"{what} was run image by image (at batch {n}: {whole.reason})"


def run_original(
    sess: ort.InferenceSession, feeds: dict[str, np.ndarray], fixed_batch: int | None
) -> tuple[dict[str, np.ndarray], str | None, int | None]:
    """The original model on a batch: at once, or by its fixed batch; a note and the images per run
    when not at once."""
    n = max((v.shape[0] for v in feeds.values() if v.ndim), default=1)
    if fixed_batch is None or fixed_batch == n:
        outs, note = run_batch(sess, feeds, "the original model")
        return outs, note, 1 if note else None
    how = "image by image" if fixed_batch == 1 else f"{fixed_batch} images at a time"
    note = f"the original model's batch is fixed at {fixed_batch}: its outputs at batch {n} come from running it {how}"
    return run_in_chunks(sess, feeds, "the original model", fixed_batch), note, fixed_batch


class BackboneMaps:
    """The heads' feature maps at a larger size, from the original backbone (see module docstring)."""

    def __init__(
        self,
        original: onnx.ModelProto,
        types: dict[str, TensorType],
        converted: onnx.ModelProto,
        input_name: str,
        heads: list[Head],
        fixed_batch: int | None = None,
    ) -> None:
        self.exported = {h.feature: h.feature_shape for h in heads}  # each map's (C, *S) as exported
        self.fixed_batch = fixed_batch  # the original's: its backbone runs by it, as at the same size
        self.chunks: dict[tuple[int, ...], int] = {}  # input shapes the original ran in chunks of this
        # a map the rewrite transposes to channel-first from a channel-last tensor: cut at that tensor
        self.channel_last = {h.feature: h.channel_last_feature for h in heads if h.channel_last_feature}
        self.sources = list(dict.fromkeys(self.channel_last.get(f, f) for f in self.exported))
        self.input_name = input_name
        self.converted = converted
        self.notes: list[str] = []
        backbone = cut(original, types, inputs=[input_name], outputs=self.sources, size_free=True)
        self.original: ort.InferenceSession | None = session(backbone)
        self.fallback: ort.InferenceSession | None = None  # the converted backbone, built on first need

    def maps(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.fallback is None:
            found = self._original_maps(x)
            if isinstance(found, dict):
                return found
            self.notes.append(
                f"the original backbone {found}; its size-agnostic rewrite was used as the reference backbone"
            )
            self.original = None  # not needed any more
            types = tensor_types(inferred_skeleton(self.converted))
            part = cut(self.converted, types, inputs=[self.input_name], outputs=self.sources, size_free=True)
            self.fallback = session(part)
        maps, _ = run_batch(self.fallback, {self.input_name: x}, "the size-agnostic backbone")
        return self._features(maps)

    def _features(self, maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each head's map, channel-first."""
        found = {}
        for feature in self.exported:
            value = maps[self.channel_last.get(feature, feature)]
            found[feature] = np.moveaxis(value, -1, 1) if feature in self.channel_last else value
        return found

    def _original_maps(self, x: np.ndarray) -> dict[str, np.ndarray] | str:
        """The original backbone's maps, or why they cannot serve as the reference."""
        try:
            assert self.original is not None
            maps, note, chunk = run_original(self.original, {self.input_name: x}, self.fixed_batch)
        except RunError as exc:
            return f"cannot run at larger sizes ({exc.reason})"
        features = self._features(maps)
        pinned = [f for f in self.exported if self._pinned(f, features[f])]
        if pinned:
            return f"pins '{pinned[0]}' to its exported size {list(self.exported[pinned[0]][1:])} at larger inputs"
        if chunk:
            self.chunks[tuple(x.shape)] = chunk
        if note and note not in self.notes:
            self.notes.append(note)
        return features

    def _pinned(self, source: str, value: np.ndarray) -> bool:
        spatial = self.exported[source][1:]
        return any(d > 1 for d in spatial) and value.shape[2:] == spatial


def head_on_windows(head: Head, head_sess: ort.InferenceSession, feature: np.ndarray) -> dict[str, np.ndarray]:
    """The original head on every window of `feature`, assembled as `[N, *out, *map]`."""
    window = head.window
    if feature.ndim == 2:  # a keepdims=0 pool: one window, shaped as the head expects
        feature = feature.reshape(*feature.shape, *([1] * head.spatial_rank))
    n = feature.shape[0]
    grid = tuple(f - k + 1 for f, k in zip(feature.shape[2:], window, strict=True))
    if any(g < 1 for g in grid):
        why = f"feature map {list(feature.shape)} is smaller than its window {list(window)}"
        raise RunError("the original head", why)
    ref_input = head_sess.get_inputs()[0]
    ref_shape = [d if isinstance(d, int) else -1 for d in ref_input.shape]
    crops = []
    for index in np.ndindex(*grid):
        crop = feature[(slice(None), slice(None), *(slice(i, i + k) for i, k in zip(index, window, strict=True)))]
        if crop.size != n * math.prod(ref_shape[1:]) and -1 not in ref_shape[1:]:  # a map read in another layout
            raise RunError("the original head", f"window {list(crop.shape)} does not fit its input {ref_shape}")
        crops.append(crop.reshape([n, *ref_shape[1:]]))
    names = [o.name for o in head_sess.get_outputs()]
    try:
        stacked = head_sess.run(names, {ref_input.name: np.concatenate(crops, axis=0)})
        _require_batch(stacked, n * len(crops))
        per_window = [[out[i * n : (i + 1) * n] for out in stacked] for i in range(len(crops))]
    except Exception:  # the head bakes its batch size: one window at a time, image by image if need be
        per_window = []
        for crop in crops:
            outs, _ = run_batch(head_sess, {ref_input.name: crop}, "the original head on a window")
            if any(outs[name].shape[:1] != (n,) for name in names):  # a `Reshape [1, -1]` ran on n images
                per_image = [run(head_sess, {ref_input.name: crop[i : i + 1]}, "the original head") for i in range(n)]
                outs = {name: np.concatenate([p[name] for p in per_image]) for name in names}
            per_window.append([outs[name] for name in names])
    result = {}
    for j, name in enumerate(names):
        stacked_j = np.stack([w[j] for w in per_window], axis=-1)
        result[name] = stacked_j.reshape(*stacked_j.shape[:-1], *grid)
    return result


def _require_batch(outputs: list[np.ndarray], batch: int) -> None:
    """A head that bakes batch 1 in a `Reshape [1, -1]` runs on a larger batch, into the wrong shape."""
    if any(out.shape[:1] != (batch,) for out in outputs):
        raise RunError("the original head", f"its outputs do not keep the batch of {batch}")


class HeadsReference:
    """Backbone maps, then each original head on every window: the expected head outputs."""

    def __init__(
        self,
        original: onnx.ModelProto,
        converted: onnx.ModelProto,
        heads: list[Head],
        input_name: str,
        fixed_batch: int | None = None,
    ) -> None:
        self.heads = heads
        self.input_name = input_name
        self._notes: list[str] = []
        types = tensor_types(inferred_skeleton(original))  # the cut tensors' types
        reads_input = any(h.reads_input for h in heads)  # an MLP: the input is the feature
        self.backbone = None
        if not reads_input:
            self.backbone = BackboneMaps(original, types, converted, input_name, heads, fixed_batch)
        self.chunks: dict[tuple[int, ...], int] = {} if self.backbone is None else self.backbone.chunks
        self.head_sessions = [
            session(cut(original, types, inputs=[h.ref_input], outputs=list(h.outputs))) for h in heads
        ]

    @property
    def notes(self) -> list[str]:
        return self._notes if self.backbone is None else self.backbone.notes

    @property
    def outputs(self) -> list[str]:
        return [o for h in self.heads for o in h.outputs]

    def chunk(self, x: np.ndarray) -> int | None:
        """The images per run of the original backbone at `x`, when it did not run them at once."""
        return self.chunks.get(tuple(x.shape))

    def close(self) -> None:
        """Free the sessions (and their mapped weights); notes and outputs stay readable."""
        if self.backbone is not None:
            self._notes = self.backbone.notes
        self.backbone = None
        self.head_sessions = []

    def keep(self, name: str, expected: np.ndarray, actual: np.ndarray) -> bool:
        """Every head output is compared."""
        return True

    def expected(self, x: np.ndarray) -> dict[str, np.ndarray | str]:
        """Each head output's reference at input `x`, or why it could not be built."""
        try:
            features = {self.input_name: x} if self.backbone is None else self.backbone.maps(x)
        except RunError as exc:
            return dict.fromkeys(self.outputs, str(exc))
        expected: dict[str, np.ndarray | str] = {}
        for head, head_sess in zip(self.heads, self.head_sessions, strict=True):
            try:
                expected.update(head_on_windows(head, head_sess, features[head.feature]))
            except RunError as exc:
                expected.update(dict.fromkeys(head.outputs, str(exc)))
        return expected


class WholeModelReference:
    """A model without FC heads: the original graph with every input dim free, at the larger size."""

    def __init__(
        self, original: onnx.ModelProto, input_name: str, exported: dict[str, tuple], fixed_batch: int | None
    ) -> None:
        self.input_name = input_name
        self.fixed_batch = fixed_batch  # the original's: run by it, as at the same size
        self.exported = exported  # each output's shape at the original size, batch aside
        self.outputs = [o.name for o in original.graph.output]
        self.notes: list[str] = []
        self.chunks: dict[tuple[int, ...], int] = {}  # input shapes the original ran in chunks of this
        whole = cut(original, tensor_types(original), inputs=[input_name], outputs=self.outputs, size_free=True)
        self.sess: ort.InferenceSession | None = session(whole)

    def close(self) -> None:
        """Free the session (and its mapped weights)."""
        self.sess = None

    def expected(self, x: np.ndarray) -> dict[str, np.ndarray | str]:
        """The original's outputs at `x`; none (with a note) when it cannot run there."""
        assert self.sess is not None, "expected() after close()"
        try:
            outs, note, chunk = run_original(self.sess, {self.input_name: x}, self.fixed_batch)
        except RunError as exc:
            self.notes.append(
                f"{exc}; the converted model at {list(x.shape)} is not compared (without FC heads the original is "
                "the only reference)"
            )
            return {}
        if chunk:
            self.chunks[tuple(x.shape)] = chunk
        if note:
            self.notes.append(note)
        return dict(outs)

    def chunk(self, x: np.ndarray) -> int | None:
        """The images per run of the original at `x`, when it did not run them at once."""
        return self.chunks.get(tuple(x.shape))

    def keep(self, name: str, expected: np.ndarray, actual: np.ndarray) -> bool:
        """False (with a note) for an output the original pins to its exported shape."""
        pinned = expected.shape[1:] == self.exported.get(name) and actual.shape[1:] != expected.shape[1:]
        if pinned:
            self.notes.append(
                f"the original pins output '{name}' to its exported shape {list(expected.shape[1:])} at larger "
                f"inputs; the converted model's {list(actual.shape[1:])} is not compared"
            )
        return not pinned
