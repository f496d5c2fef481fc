"""Checks of option values, so that a bad option fails when it is built, in words, not later."""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any

from .shapes import DimNames
from .verify import Tolerance


def _int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def sizes_problem(sizes: Any) -> str | None:
    """`sizes`: None, or a sequence of sizes, each a sequence of positive ints (`((128, 96),)`)."""
    if sizes is None:
        return None
    if not isinstance(sizes, tuple | list) or not sizes:
        return f"sizes must be a non-empty sequence of sizes like ((128, 96),), not {sizes!r}"
    for size in sizes:
        if not isinstance(size, tuple | list) or not size or not all(_int(d) and d >= 1 for d in size):
            return f"sizes must be a sequence of sizes like ((128, 96),); {size!r} is not a size of positive ints"
    return None


def options_problem(options: Any) -> str | None:
    """What is wrong with a ConvertOptions, or None."""
    for name in ("dense", "verify", "in_place"):
        if not isinstance(getattr(options, name), bool):
            return f"{name} must be True or False, not {getattr(options, name)!r}"
    names = options.dim_names
    if not isinstance(names, DimNames):
        return f"dim_names must be a DimNames, not {type(names).__name__}"
    for field in ("batch", "height", "width", "depth", "length"):
        value = getattr(names, field)
        if not isinstance(value, str) or not value.strip() or not value.isprintable():
            return f"dim_names.{field} must be a printable, non-empty name, not {value!r}"
    tolerance = options.tolerance
    if not isinstance(tolerance, Tolerance):
        return f"tolerance must be a Tolerance, not {type(tolerance).__name__}"
    for field in ("rtol", "atol"):
        value = getattr(tolerance, field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            return f"tolerance.{field} must be a finite number >= 0, not {value!r}"
    problem = sizes_problem(options.sizes)
    if problem is not None:
        return problem
    if not _int(options.seed) or options.seed < 0:
        return f"seed must be an int >= 0, not {options.seed!r}"
    if not _int(options.mlp_spatial_rank) or not 1 <= options.mlp_spatial_rank <= 3:
        return f"mlp_spatial_rank must be 1, 2 or 3, not {options.mlp_spatial_rank!r}"
    if not _int(options.external_threshold) or options.external_threshold < 0:
        return f"external_threshold must be a byte count >= 0, not {options.external_threshold!r}"
    return _variants_problem(options)


def _variants_problem(options: Any) -> str | None:
    """--output-stride, --input-size, --batch and --exported-size."""
    for name in ("output_stride", "batch"):
        value = getattr(options, name)
        if value is not None and (not _int(value) or value < 1):
            return f"{name} must be an int >= 1, not {value!r}"
    if options.exported_size is not None:
        problem = sizes_problem((options.exported_size,))
        if problem is not None:
            return f"exported_size: {problem}"
    if options.input_size is not None:
        problem = sizes_problem((options.input_size,))
        if problem is not None:
            return f"input_size: {problem}"
    elif options.batch is not None:
        return "batch needs input_size (a static shape)"
    return None
