"""Counting: parameters, FLOPs per token, KV-cache bytes, against the published figures."""

from __future__ import annotations

from typing import Any

from ..spec.load import ResolvedSpec
from .flops import forward_flops_per_token, kv_cache_bytes_per_token
from .params import ParamCount, count_params

TOLERANCE = 0.02


def params_report(resolved: ResolvedSpec) -> dict[str, Any]:
    """The figures `taxonc params` prints, as plain JSON-able values."""
    spec = resolved.spec
    counts = count_params(spec)
    flops = forward_flops_per_token(spec)
    published = spec.published.params
    deviation = (counts.total - published) / published if published else None
    active_dev = None
    if spec.published.active_params:
        active_dev = (counts.active - spec.published.active_params) / spec.published.active_params
    return {
        "name": spec.model.name,
        "file": resolved.path,
        "disclosed": spec.disclosed,
        "params": counts.total,
        "params_published": published,
        "params_deviation": deviation,
        "params_active": counts.active,
        "params_active_published": spec.published.active_params,
        "params_active_deviation": active_dev,
        "params_embedding": counts.embedding,
        "params_non_embedding": counts.non_embedding,
        "params_components": counts.components,
        "published_source": spec.published.source,
        "deviation_reason": spec.published.deviation,
        "flops_per_token": flops.total,
        "flops_per_token_matmul": flops.matmul,
        "flops_per_token_attention": flops.attention,
        "flops_per_token_encoder": flops.encoder_per_token,
        "flops_per_token_2n": 2 * (counts.active - counts.embedding),
        "train_flops_per_token_6n": 6 * (counts.active - counts.embedding),
        "kv_cache_bytes_per_token": kv_cache_bytes_per_token(spec),
        "context": spec.dims.context,
        "assumed": not spec.disclosed,
    }


def within_tolerance(report: dict[str, Any]) -> bool:
    dev = report["params_deviation"]
    return dev is None or abs(dev) <= TOLERANCE


__all__ = ["ParamCount", "count_params", "forward_flops_per_token", "kv_cache_bytes_per_token", "params_report", "within_tolerance"]
