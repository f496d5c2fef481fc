"""A model over 2 GB (protobuf's limit): converted with verification, written with external data.

The Flatten -> Gemm head has a 134,400 x 4,096 fp32 weight (2.2 GB) written straight into
`big.onnx.data`. The conversion runs in a subprocess (the CLI, as a pipeline would call it) whose
peak RSS is measured and printed (run pytest with -s to see it; it is also a record_property).

onnxruntime with default session options cannot load the converted model: its layout optimizer
(ORT_ENABLE_ALL) copies the 2.2 GB Conv kernel into an embedded NCHWc initializer and then refuses
it (over its own 2 GB limit for embedded data). The converted model is therefore run with
ORT_ENABLE_EXTENDED, as the verifier does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from corpus import leftovers, sha256, write_large_fc_model

TWO_GB = 2**31
# the input's and the output's data files (2.2 GB each) and room for the rest
DISK_NEEDED = 5 * 2**30
RUNNER = """
import json, resource, subprocess, sys, time
start = time.monotonic()
proc = subprocess.run([sys.executable, "-m", "onnx_fc2conv", "convert", *sys.argv[1:]], capture_output=True, text=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                  "seconds": time.monotonic() - start, "peak_rss_mb": usage.ru_maxrss / 1024}))
"""


@pytest.mark.slow
def test_convert_model_over_2gb(tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    free = shutil.disk_usage(tmp_path).free
    if free < DISK_NEEDED:
        pytest.skip(f"needs {DISK_NEEDED / 2**30:.0f} GiB free under {tmp_path}, has {free / 2**30:.1f} GiB")
    src = tmp_path / "src"
    out = tmp_path / "out"
    src.mkdir()
    out.mkdir()
    t0 = time.monotonic()
    model_path = write_large_fc_model(src)
    data_path = src / "big.onnx.data"
    assert data_path.stat().st_size > TWO_GB
    build_seconds = time.monotonic() - t0
    before = (sha256(model_path), sha256(data_path))

    target = out / "big_fcn.onnx"
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(model_path), str(target)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["rc"] == 0, run["stderr"]
    assert "result: PASSED" in run["stdout"], run["stdout"]
    assert run["stdout"].count("PASSED  larger size") >= 2, run["stdout"]
    record_property("peak_rss_mb", round(run["peak_rss_mb"]))
    record_property("convert_seconds", round(run["seconds"], 1))
    print(
        f"\n>2 GB model: built in {build_seconds:.0f} s; convert + verify + write: {run['seconds']:.0f} s, "
        f"peak RSS {run['peak_rss_mb']:.0f} MB ({run['peak_rss_mb'] / 1024:.1f} GiB)"
    )

    # the output: a small .onnx and the weights in <out>.data; nothing else left behind
    assert {p.name for p in out.iterdir()} == {"big_fcn.onnx", "big_fcn.onnx.data"}
    assert leftovers(out) == []
    assert target.stat().st_size < 1 << 20
    assert (out / "big_fcn.onnx.data").stat().st_size > TWO_GB
    skeleton = onnx.load(str(target), load_external_data=False)
    kernels = [t for t in skeleton.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert any(list(t.dims) == [134_400, 64, 8, 8] for t in kernels)
    onnx.checker.check_model(str(target))
    assert (sha256(model_path), sha256(data_path)) == before, "the input must not change"

    # it loads and runs, at the original size and a larger one
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.add_session_config_entry("session.disable_prepacking", "1")
    sess = ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    (small,) = sess.run(None, {"input": rng.standard_normal((1, 64, 8, 8), dtype=np.float32)})
    assert small.shape == (1, 134_400, 1, 1) and np.isfinite(small).all()
    (large,) = sess.run(None, {"input": rng.standard_normal((1, 64, 10, 9), dtype=np.float32)})
    assert large.shape == (1, 134_400, 3, 2) and np.isfinite(large).all()
