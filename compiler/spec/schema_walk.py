"""Navigate the spec schema by path: map pydantic error locations to TOML keys."""

from __future__ import annotations

import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from .model import ModelSpec


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and Optional; leave unions of models and lists."""
    while True:
        origin = get_origin(annotation)
        if origin is typing.Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in get_args(annotation) if a is not type(None)]
            if len(args) == 1:
                annotation = args[0]
            else:
                return annotation
        else:
            return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def union_members(annotation: Any) -> dict[str, type[BaseModel]]:
    """For a discriminated union of models: {kind tag: model class}; else {}."""
    annotation = _unwrap(annotation)
    if get_origin(annotation) not in (typing.Union, types.UnionType):
        return {}
    members = {}
    for arg in get_args(annotation):
        arg = _unwrap(arg)
        if _is_model(arg) and "kind" in arg.model_fields:
            for tag in get_args(arg.model_fields["kind"].annotation):
                members[tag] = arg
    return members


def strip_tags(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Turn a pydantic loc into a dotted TOML key, dropping union tags.

    Also returns the model class that owns the last key, for did-you-mean suggestions.
    """
    parts: list[str] = []
    current: Any = ModelSpec
    owner: type[BaseModel] | None = ModelSpec
    items = list(loc)
    i = 0
    while i < len(items):
        item = items[i]
        current = _unwrap(current)
        members = union_members(current)
        if members and isinstance(item, str) and item in members:
            current = members[item]
            i += 1
            continue
        if get_origin(current) is list and isinstance(item, int):
            parts.append(str(item))
            current = get_args(current)[0]
            i += 1
            continue
        if _is_model(current) and isinstance(item, str):
            owner = current
            parts.append(item)
            field = current.model_fields.get(item)
            current = field.annotation if field else None
            i += 1
            continue
        parts.append(str(item))
        i += 1
    return ".".join(parts), owner


# Names other codebases give our keys (HF config.json, nanoGPT, Megatron), for the did-you-mean of an unknown key.
# A synonym is offered only where its target is a key of the table it was written in.
KEY_SYNONYMS: dict[str, str] = {
    "n_layer": "n_layers", "num_hidden_layers": "n_layers", "num_layers": "n_layers",
    "n_embd": "d_model", "hidden_size": "d_model", "dim": "d_model", "n_head": "n_heads",
    "num_attention_heads": "n_heads", "head_dim": "d_head", "intermediate_size": "d_ff", "ffn_dim": "d_ff",
    "vocab": "vocab_size", "block_size": "context", "max_position_embeddings": "context", "n_positions": "context",
    "seq_len": "context", "num_key_value_heads": "n_kv_heads", "n_kv_head": "n_kv_heads", "n_query_groups": "n_kv_heads",
    "rope_theta": "base", "rotary_pct": "fraction", "partial_rotary_factor": "fraction",
    "layer_norm_eps": "eps", "rms_norm_eps": "eps", "layer_norm_epsilon": "eps", "norm_eps": "eps",
    "hidden_act": "activation", "tie_word_embeddings": "tied_embeddings", "num_experts": "n_experts",
    "num_experts_per_tok": "top_k",
}


def allowed_keys(model_cls: type[BaseModel] | None) -> list[str]:
    return sorted(model_cls.model_fields) if model_cls else []


def leaf_paths(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of every scalar or list value of a validated spec."""
    out: list[str] = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            out.extend(leaf_paths(value, dotted + "."))
        else:
            out.append(dotted)
    return out
