"""taxonc.testing: hypothesis strategies and property checks for any spec.

    from taxonc.testing import given_spec, check_causality, specs, token_batches
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

from .properties import (
    PROPERTIES,
    PropertyResult,
    Subject,
    check_backends,
    check_causality,
    check_gqa_equals_mha,
    check_kv_cache,
    check_moe_one_expert,
    check_param_count,
    check_passes,
    check_save_load,
    check_subject,
    check_toml_round_trip,
    load_subject,
)
from .strategies import invalid_specs, spec_dicts, specs, token_batches


def given_spec(path: str | Path, scale: str = "tiny") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a test taking `subject`: it receives the spec compiled once, with test weights."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        cache: dict[str, Subject] = {}

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if "subject" not in cache:
                cache["subject"] = load_subject(path, scale)
            return fn(*args, subject=cache["subject"], **kwargs)

        # pytest must not treat `subject` as a fixture
        import inspect

        sig = inspect.signature(fn)
        wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "subject"])  # type: ignore[attr-defined]
        return wrapper

    return decorate


__all__ = [
    "PROPERTIES", "PropertyResult", "Subject", "check_backends", "check_causality", "check_gqa_equals_mha",
    "check_kv_cache", "check_moe_one_expert", "check_param_count", "check_passes", "check_save_load",
    "check_subject", "check_toml_round_trip", "given_spec", "invalid_specs", "load_subject", "spec_dicts", "specs",
    "token_batches",
]
