"""JSON Schema for spec *files*.

A file may inherit any value through `extends`, so the schema requires nothing except the
`kind` that selects a variant; everything else (types, ranges, choices, unknown keys) is
checked as in the resolved spec.
"""

from __future__ import annotations

from typing import Any

from .identity import IDENTITY_FIELDS, INHERITS_KEY
from .model import ModelSpec


def _relax(node: Any) -> Any:
    if isinstance(node, dict):
        props = node.get("properties", {})
        relaxed = {k: _relax(v) for k, v in node.items() if k != "required"}
        if "kind" in props and "default" not in props["kind"]:
            relaxed["required"] = ["kind"]  # selects the variant of a union; never defaulted
        return relaxed
    if isinstance(node, list):
        return [_relax(v) for v in node]
    return node


def spec_json_schema() -> dict[str, Any]:
    schema = _relax(ModelSpec.model_json_schema(mode="validation"))
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "taxonc model spec"
    schema["properties"]["extends"] = {
        "description": "Spec(s) to inherit from, as paths relative to this file (.toml optional).",
        "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
    }
    schema["properties"][INHERITS_KEY] = {
        "description": "Identity fields taken from the model spec this file extends (the base's value is true of this model too).",
        "type": "array", "items": {"enum": list(IDENTITY_FIELDS)},
    }
    schema["properties"]["abstract"] = {
        "description": "A recipe: a partial spec that other specs extend, not a model by itself.",
        "type": "boolean",
    }
    return schema
