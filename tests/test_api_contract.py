"""The Python API's contract: `__all__` is exactly the public API, the package is typed, options are
checked when they are built, and every error the API raises is an Fc2ConvError with its exit code."""

from __future__ import annotations

import dataclasses
import inspect
import types
from importlib import resources
from pathlib import Path

import onnx
import pytest
from corpus import FcSpec, ModelSpec, build, save, small_model

import onnx_fc2conv
from onnx_fc2conv import (
    CheckerError,
    ConversionResult,
    ConvertOptions,
    DimNames,
    Fc2ConvError,
    ModelLoadError,
    ModelRunError,
    NotConvertibleError,
    Tolerance,
    UsageError,
    VerificationError,
    convert_file,
    verify,
)

PUBLIC = {
    "convert", "convert_file", "inspect", "verify", "window_geometry",
    "ConvertOptions", "DimNames", "Tolerance",
    "ConversionResult", "HeadRewrite", "LayerRewrite", "RelaxedInput", "BackboneFix", "Inspection",
    "Head", "FcLayer", "Skipped", "Geometry", "VerificationReport", "Comparison",
    "Fc2ConvError", "UsageError", "ModelLoadError", "ModelRunError", "NotConvertibleError",
    "VerificationError", "CheckerError",
}  # fmt: skip
ERRORS = {
    UsageError: 2,
    ModelLoadError: 2,
    ModelRunError: 2,
    NotConvertibleError: 3,
    VerificationError: 1,
    CheckerError: 1,
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(onnx_fc2conv.__all__) == PUBLIC
    namespace: dict = {}
    exec("from onnx_fc2conv import *", namespace)
    assert set(namespace) - {"__builtins__"} == PUBLIC
    exported = {
        name
        for name, value in vars(onnx_fc2conv).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert exported == PUBLIC, "every public name of the package is in __all__, and nothing else"


def test_typed_package() -> None:
    assert resources.files("onnx_fc2conv").joinpath("py.typed").is_file()


@pytest.mark.parametrize(
    "name",
    ["ConvertOptions", "ConversionResult", "HeadRewrite", "Inspection", "Geometry", "LayerRewrite", "Tolerance",
     "FcLayer", *(e.__name__ for e in ERRORS), "Fc2ConvError"],
)  # fmt: skip
def test_public_types_have_docstrings(name: str) -> None:
    """A dataclass without a docstring gets `Name(field: type, ...)`: that is not documentation."""
    doc = inspect.getdoc(getattr(onnx_fc2conv, name)) or ""
    assert doc and not doc.startswith(f"{name}("), doc


def test_errors_carry_their_exit_codes() -> None:
    for error, code in ERRORS.items():
        assert issubclass(error, Fc2ConvError) and error.exit_code == code
    assert issubclass(ModelRunError, ModelLoadError) and issubclass(CheckerError, VerificationError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": (128, 96)}, "sizes must be a sequence of sizes like ((128, 96),); 128 is not a size"),
        ({"sizes": ((128, 0),)}, "(128, 0) is not a size of positive ints"),
        ({"sizes": ()}, "sizes must be a non-empty sequence of sizes"),
        ({"seed": -1}, "seed must be an int >= 0, not -1"),
        ({"seed": 1.5}, "seed must be an int >= 0, not 1.5"),
        ({"verify": "yes"}, "verify must be True or False, not 'yes'"),
        ({"tolerance": Tolerance(rtol=-1)}, "tolerance.rtol must be a finite number >= 0, not -1"),
        ({"tolerance": Tolerance(atol=float("nan"))}, "tolerance.atol must be a finite number >= 0, not nan"),
        ({"tolerance": (1e-4, 1e-5)}, "tolerance must be a Tolerance, not tuple"),
        ({"dim_names": DimNames(height="")}, "dim_names.height must be a printable, non-empty name"),
        ({"dim_names": DimNames(width="w\n")}, "dim_names.width must be a printable, non-empty name"),
        ({"mlp_spatial_rank": 0}, "mlp_spatial_rank must be 1, 2 or 3, not 0"),
        ({"external_threshold": -5}, "external_threshold must be a byte count >= 0, not -5"),
    ],
)
def test_convert_options_check_their_fields(kwargs: dict, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        ConvertOptions(**kwargs)
    assert str(caught.value).startswith("ConvertOptions: ") and message in str(caught.value), str(caught.value)
    assert caught.value.exit_code == 2


def test_good_options_pass() -> None:
    options = ConvertOptions(sizes=((128, 96), [64, 80]), seed=3, tolerance=Tolerance(rtol=1e-3, atol=0))
    assert dataclasses.replace(options, verify=False).verify is False


def test_verify_on_mismatched_models_reports_not_raises(tmp_path: Path) -> None:
    """A converted model that does not fit the original (a larger window) cannot run at the
    original's size: a report that fails and says why, not a bare RuntimeError."""
    original = save(small_model(), tmp_path / "a.onnx")
    other = save(build(ModelSpec(height=5, width=5, layers=(FcSpec(5),))), tmp_path / "b.onnx")
    converted = tmp_path / "b_fcn.onnx"
    convert_file(other, converted)
    report = verify(str(original), str(converted))
    assert not report.passed
    assert any("the converted model cannot run" in c.note for c in report.failures), report.failures


def test_convert_file_returns_a_result(tmp_path: Path) -> None:
    src = save(small_model(), tmp_path / "m.onnx")
    result = convert_file(src, tmp_path / "c.onnx", ConvertOptions(external_threshold=0))
    assert isinstance(result, ConversionResult)
    assert result.output == tmp_path / "c.onnx" and result.data_file == tmp_path / "c.onnx.data"
    assert isinstance(onnx.load(str(result.output)), onnx.ModelProto)
