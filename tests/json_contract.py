"""The JSON contract: every document the CLI prints validates against the committed schema."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema


@cache
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("onnx_fc2conv").joinpath("schema/report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(doc: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(validator().iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    return doc


def parse(stdout: str) -> dict[str, Any]:
    """Exactly one JSON document (json.loads refuses anything after it), validated."""
    return validate(json.loads(stdout))
