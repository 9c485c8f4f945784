"""HF config <-> taxonc spec, and HF tensor names, by the family table (interop.hf).

- `spec_values` / `spec_tables`: the spec an HF config describes (config.json as a dict).
- `config_values`: the config keys a spec comes back to (for export); `round_trip_differences`
  names every architecture value the family's config cannot carry, so an exporter (or an
  importer checking itself) refuses instead of writing a different function.
- `mismatched_requirements`: config values under which the family's hard-wired conventions
  would not hold.
- `locate`: the HF tensor behind one parameter of the lowered taxonc graph.

No torch or transformers import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..spec.model import ModelSpec
from .hf import FAMILIES
from .hf_schema import Config, Take, Values

# the spec tables (and model.structure) that decide the function a model computes
ARCHITECTURE = ("dims", "encoder", "attention", "position", "norm", "mlp", "block", "bias", "moe", "cross_attention")
# and single keys of other tables that decide what generation computes
GENERATION = ("tokenizer.decoder_start_id",)
_DOCUMENTATION = ("source", "notes")


def spec_values(model_type: str, cfg: Config) -> Values:
    """Flat dotted spec values for an HF config dict (as config.json or `config.to_dict()` holds it)."""
    family = FAMILIES[model_type]
    values: Values = dict(family.fixed)
    for key in family.keys:
        raw = family.read(cfg, key.hf, key.default)
        if raw is None:  # an optional value the config leaves out (no class default): the spec leaves it out too
            continue
        values[key.spec] = key.to_spec(raw, cfg) if key.to_spec else raw
    if family.derived:
        values.update(family.derived(cfg))
    return values


def spec_tables(model_type: str, cfg: Config, name: str) -> dict[str, dict[str, Any]]:
    """The spec as nested TOML tables, every behaviour written out."""
    tables: dict[str, dict[str, Any]] = {"model": {"name": name}}
    for dotted, value in sorted(spec_values(model_type, cfg).items()):
        table, _, key = dotted.partition(".")
        tables.setdefault(table, {})[key] = value
    return tables


def mismatched_requirements(model_type: str, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """Config keys whose value differs from what the family's fixed conventions assume: key -> (found, needed)."""
    return {k: (cfg[k], v) for k, v in FAMILIES[model_type].requires.items() if k in cfg and cfg[k] != v}


def architecture(spec: ModelSpec) -> Values:
    """The values of a resolved spec that decide its function (and where its decoder starts generating),
    flat ("table.key"), documentation left out."""
    data = spec.model_dump(mode="json")
    out: Values = {"model.structure": data["model"]["structure"]}
    for table in ARCHITECTURE:
        content = data.get(table)
        if not isinstance(content, dict):
            out[table] = content
            continue
        out.update({f"{table}.{k}": v for k, v in content.items() if k not in _DOCUMENTATION})
    for dotted in GENERATION:
        table, _, key = dotted.partition(".")
        out[dotted] = data[table][key]
    return out


def config_values(model_type: str, values: Values) -> Config:
    """The HF config keys for flat spec values (`architecture(spec)`), by the family's keys and their inverses.

    Values the family cannot carry are simply not written; `round_trip_differences` finds them.
    """
    family = FAMILIES[model_type]
    cfg: Config = {"model_type": model_type, **family.requires}
    for key in family.keys:
        if key.spec in values and values[key.spec] is not None:
            cfg[key.hf] = key.to_hf(values[key.spec]) if key.to_hf else values[key.spec]
    if family.exported:
        cfg.update(family.exported(values))
    return cfg


def round_trip_differences(model_type: str, spec: ModelSpec, reread: ModelSpec) -> dict[str, tuple[Any, Any]]:
    """Architecture values that differ between a spec and the one read back from its exported config:
    what the family's config cannot express. key -> (in the spec, after the round trip)."""
    a, b = architecture(spec), architecture(reread)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@dataclass(frozen=True)
class Located:
    """Where one taxonc parameter comes from: the family's Take and the full HF name (with {e} left in)."""

    take: Take
    hf_name: str


def locate(model_type: str, taxonc_name: str) -> Located:
    """The HF source of one parameter of the lowered graph, e.g. "layers.3.q.weight"."""
    family = FAMILIES[model_type]
    parts = taxonc_name.split(".")
    if parts[0] in ("layers", "encoder_layers") and len(parts) > 2 and parts[1].isdigit():
        scope, index, local = parts[0], parts[1], ".".join(parts[2:])
    else:
        scope, index, local = parts[0], "", ".".join(parts[1:])
    table = family.weights.get(scope, {})
    if local not in table:
        raise KeyError(f"{model_type}: no HF source for taxonc parameter {taxonc_name!r}")
    take = table[local]
    return Located(take, family.prefixes[scope].format(i=index) + take.hf)
