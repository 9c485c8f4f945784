"""Which specs a per-spec test loop runs over by default.

At tiny scale many of the 77 specs in specs/ compile to the same model up to numbers and names
(the gpt3 sizes, the OPT sizes, post-trained derivatives of one base). A test that emits, runs,
interprets, fuses or caches a tiny model learns nothing new from a second spec of the same
structure, so by default it runs one representative per tiny-scale structure: the first spec by
name among those sharing `structure_key`. The other specs stay in the parametrisation with the
`all_specs` marker and are deselected unless asked for, as are tests marked all_specs as a whole
because they need every spec (the README's MLIR support table):

    pytest --all-specs          # every spec in every per-spec loop (also: TAXONC_ALL_SPECS=1)
    pytest -m all_specs         # only the non-representative specs
    pytest 'tests/test_backend_torch.py::test_tiny_forward_is_finite_and_matches_the_graph[opt-125m]'
                                # a spec named on the command line always runs

Tests about per-spec facts (published counts, validation, schema, full-size parameter counts)
keep every spec; `taxonc check specs/` also runs every property over every spec.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path

import pytest

from taxonc.compiler.spec import derive, is_abstract, load_spec
from taxonc.compiler.spec.model import ModelSpec
from taxonc.compiler.spec.scale import scale_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
MODEL_FILES = [p for p in sorted(SPECS.glob("*.toml")) if not is_abstract(p)]

# Set by conftest.pytest_configure from --all-specs / -m all_specs / TAXONC_ALL_SPECS.
ALL_SPECS_REQUESTED = os.environ.get("TAXONC_ALL_SPECS", "") not in ("", "0")


def structure_key(spec: ModelSpec) -> tuple:
    """What the emitted tiny model's code depends on, beyond numbers: two specs with the same key
    emit the same model.py at tiny scale up to sizes, constants and docstrings."""
    t = scale_spec(spec, "tiny")
    arch = derive(t)
    pos = t.position
    return (
        ("structure", t.model.structure, t.encoder.n_layers if t.encoder else None),
        ("attention", t.attention.kind, t.dims.n_heads // arch.n_kv_heads,
         t.attention.sparse.kind if t.attention.sparse else None),
        # per decoder layer: dense or sparse kind, MoE or not, cross-attention kind
        ("layers", tuple((layer.sparse, layer.moe, layer.cross_attention) for layer in arch.layers)),
        ("encoder_moe", arch.encoder_moe),
        ("position", pos.kind, getattr(pos, "fraction", 1.0) < 1, getattr(pos, "offset", 0) > 0,
         getattr(pos, "shared_biases", None), getattr(pos, "per_layer", None)),
        ("norm", t.norm.kind, t.norm.placement, t.norm.final, t.norm.embedding,
         t.norm.deepnorm_scaling if t.norm.kind == "deepnorm" else None),
        ("mlp", t.mlp.activation),
        ("block", t.block.wiring, t.block.parallel_norms if t.block.wiring == "parallel" else None,
         t.block.tied_embeddings),
        ("bias", tuple(t.bias.model_dump().items())),
        ("moe", (t.moe.router, t.moe.top_k, t.moe.activation, t.moe.d_ff is not None) if t.moe else None),
        ("widths", t.dims.d_embed is not None, t.dims.d_model == t.dims.n_heads * arch.d_head),
        ("mup", t.training.mup.enabled),
    )


@cache
def _classes(paths: tuple[Path, ...]) -> dict[tuple, list[Path]]:
    classes: dict[tuple, list[Path]] = {}
    for path in sorted(paths, key=lambda p: p.stem):
        classes.setdefault(structure_key(load_spec(path).spec), []).append(path)
    return classes


def structure_classes(paths: Iterable[Path] = MODEL_FILES) -> list[list[Path]]:
    """Specs grouped by tiny-scale structure; each group and the list sorted by name."""
    return sorted(_classes(tuple(paths)).values(), key=lambda group: group[0].stem)


def representatives(paths: Iterable[Path] = MODEL_FILES) -> list[Path]:
    """One spec per tiny-scale structure: the first by name in each class, in name order."""
    return [group[0] for group in structure_classes(paths)]


def spec_params(paths: Iterable[Path] = MODEL_FILES) -> list:
    """pytest.param per spec, named by its stem; non-representatives carry the all_specs marker."""
    paths = list(paths)
    chosen = set(representatives())
    return [pytest.param(p, id=p.stem, marks=() if p in chosen else pytest.mark.all_specs) for p in paths]


def selected(paths: Iterable[Path]) -> list[Path]:
    """For loops pytest cannot mark (hypothesis' sampled_from): the representatives among
    `paths`, or all of them when every spec was asked for."""
    paths = list(paths)
    if ALL_SPECS_REQUESTED:
        return paths
    chosen = set(representatives())
    return [p for p in paths if p in chosen]
