"""Properties of spec resolution: TOML round trip and order-independent `extends`."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from taxonc.compiler.spec import load_spec
from taxonc.compiler.spec.dump import dump_spec, toml_value
from taxonc.compiler.spec.model import ModelSpec
from taxonc.compiler.spec.rules import check_rules

from .strategies import spec_dicts


def _valid(spec: dict[str, Any]) -> ModelSpec:
    model = ModelSpec.model_validate(spec)
    assert check_rules(model) == []  # the strategy only draws valid specs
    return model


def _leaves(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.extend(_leaves(value, prefix + (key,)))
        else:
            out.append((prefix + (key,), value))
    return out


def _nest(leaves: list[tuple[tuple[str, ...], Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, value in leaves:
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return root


def _write(path: Path, data: dict[str, Any], header: str = "") -> None:
    """Write nested dicts as TOML with dotted keys, in the dict's own order."""
    lines = [header] if header else []
    for key_path, value in _leaves(data):
        lines.append(".".join(f'"{k}"' for k in key_path) + " = " + toml_value(value))
    path.write_text("\n".join(lines) + "\n")


@given(spec_dicts())
def test_dump_then_load_is_identity(raw: dict[str, Any]) -> None:
    model = _valid(raw)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(dump_spec(model))
        resolved = load_spec(path)
    assert resolved.spec == model


@given(spec_dicts(), st.integers(2, 3), st.randoms(use_true_random=False))
def test_extends_is_order_independent(raw: dict[str, Any], n_bases: int, rnd: random.Random) -> None:
    model = _valid(raw)
    leaves = _leaves(raw)
    groups: list[list[tuple[tuple[str, ...], Any]]] = [[] for _ in range(n_bases + 1)]
    for leaf in leaves:
        groups[rnd.randrange(n_bases + 1)].append(leaf)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for attempt in range(2):
            folder = Path(tmp) / f"try{attempt}"
            folder.mkdir()
            order = list(range(n_bases))
            rnd.shuffle(order)
            for i in range(n_bases):
                shuffled = groups[i][:]
                rnd.shuffle(shuffled)
                # fragments of one model are recipes: a model base would make identity fields need `inherits`
                _write(folder / f"base{i}.toml", _nest(shuffled), header="abstract = true")
            extends = "extends = [" + ", ".join(f'"base{i}"' for i in order) + "]"
            child = groups[-1][:]
            rnd.shuffle(child)
            _write(folder / "child.toml", _nest(child), header=extends)
            results.append(load_spec(folder / "child.toml"))
    assert results[0].spec == model and results[1].spec == model
    assert results[0].digest == results[1].digest


@given(spec=spec_dicts(), start=st.integers(0, 600))
def test_a_decoder_start_is_allowed_exactly_inside_an_encoder_decoders_embedding(spec: dict[str, Any], start: int) -> None:
    spec["tokenizer"] = {**spec["tokenizer"], "decoder_start_id": start}
    named = [v for v in check_rules(ModelSpec.model_validate(spec)) if v[0] == "tokenizer.decoder_start_id"]
    allowed = spec["model"]["structure"] == "encoder-decoder" and start < spec["dims"]["vocab_size"]
    assert (named == []) == allowed, named
