"""config.json -> a spec whose every value names its origin, and a spec -> config.json.

Both directions go through the family tables in interop/hf_families.py. Export is the inverse
checked by the forward direction: the config written for a spec must read back to the same
architecture, else no transformers class expresses the spec and export refuses it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..spec.dump import toml_value
from ..spec.model import ModelSpec
from .hf_families import FAMILIES, Family, family_of
from .hf_keys import MISSING, ImportRefused, Only, Reading, To, read_keys

CONFIG = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # real configs are a few KB

# The spec sections that decide the function a model computes (documentation fields aside).
ARCH_SECTIONS = ("dims", "attention", "position", "norm", "mlp", "block", "bias", "moe", "encoder", "cross_attention")
SECTION_ORDER = ("model", "dims", "attention", "position", "norm", "mlp", "block", "bias", "tokenizer")


def read_config_json(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG
    if not path.is_file():
        raise ImportRefused(f"{directory}: no {CONFIG}; a Hugging Face model directory has config.json next to its weights")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ImportRefused(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; not a model config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ImportRefused(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ImportRefused(f"{path}: must hold a JSON object, not {type(config).__name__}")
    return config


def family_for(config: dict[str, Any], where: str) -> Family:
    family = family_of(config.get("model_type"))
    if family is None:
        raise ImportRefused(f"{where}: model_type {config.get('model_type')!r} is not supported "
                            f"(supported: {', '.join(sorted(FAMILIES))})")
    return family


def read_spec_fields(config: dict[str, Any], where: str) -> tuple[Family, Reading]:
    """The spec values config.json implies, each with its origin; every refused key in one error."""
    family = family_for(config, where)
    reading = Reading()
    reading.set(dict(family.fixed), family.fixed_origin)
    rules = {"model_type": Only((family.model_type,), "names the family"), **family.rules}
    found = read_keys(config, rules, family.nested)
    reading.set(found.fields, "")
    reading.origins.update(found.origins)
    if found.refusals:
        listed = "; ".join(r.render() for r in found.refusals)
        raise ImportRefused(f"{where}: {len(found.refusals)} key(s) taxonc cannot import as the same function: {listed}")
    return family, reading


def _tables(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for dotted, value in fields.items():
        section, key = dotted.split(".", 1)
        tables.setdefault(section, {})[key] = value.value if hasattr(value, "value") else value
    return tables


def spec_tables(family: Family, reading: Reading, name: str) -> dict[str, dict[str, Any]]:
    fields = {"model.name": name, "model.structure": family.structure, **reading.fields}
    return _tables(fields)


def spec_toml(family: Family, reading: Reading, name: str, extra: dict[str, tuple[Any, str]] | None = None) -> str:
    """The spec as TOML, every value followed by a comment naming where it came from."""
    fields = {"model.name": (name, "the checkpoint directory's name"),
              "model.structure": (family.structure, family.fixed_origin),
              "model.notes": (f"Imported from a Hugging Face checkpoint (model_type {family.model_type}).", "taxonc import")}
    fields.update({k: (v, reading.origins.get(k, "")) for k, v in reading.fields.items()})
    fields.update(extra or {})
    by_section: dict[str, list[str]] = {}
    for dotted, (value, origin) in fields.items():
        section, key = dotted.split(".", 1)
        plain = value.value if hasattr(value, "value") else value
        comment = f"  # {origin}" if origin else ""
        by_section.setdefault(section, []).append(f"{key} = {toml_value(plain)}{comment}")
    order = [s for s in SECTION_ORDER if s in by_section] + sorted(set(by_section) - set(SECTION_ORDER))
    head = (f"# Written by taxonc import from a Hugging Face {family.model_type} checkpoint.\n"
            "# Each value's comment names its origin: a config.json key, the family's modelling code, or a default.\n")
    return head + "".join(f"\n[{s}]\n" + "\n".join(by_section[s]) + "\n" for s in order)


# --------------------------------------------------------------------------------------------
# export: spec -> config.json
# --------------------------------------------------------------------------------------------

def _arch_view(spec: ModelSpec) -> dict[str, Any]:
    """What decides the function: the architecture sections without their documentation, sizes derived."""
    from ..spec import derive

    dump = spec.model_dump(mode="json")
    view: dict[str, Any] = {"model.structure": dump["model"]["structure"]}
    for section in ARCH_SECTIONS:
        table = dump.get(section)
        if isinstance(table, dict):
            for key, value in table.items():
                if key != "source":
                    view[f"{section}.{key}"] = value
        else:
            view[section] = table
    arch = derive(spec)
    view.update({"dims.d_head": arch.d_head, "dims.d_ff": arch.d_ff})
    for key in ("dims.ff_ratio", "dims.ff_multiple_of"):  # d_ff is compared instead
        view.pop(key, None)
    return view


def _candidate_config(family: Family, dump: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {"model_type": family.model_type, "architectures": [family.hf_class]}
    nested: dict[str, dict[str, Any]] = {}
    taken_fields: set[str] = set()
    for key, rule in family.rules.items():
        if not isinstance(rule, To):
            continue
        if rule.field and rule.field in taken_fields:
            continue  # an alias (n_embed for hidden_size) or an older name (rope_theta): one is enough
        try:
            value = rule.export(dump)
        except (KeyError, TypeError, ValueError):
            continue
        if value is None and rule.default is MISSING:
            continue
        taken_fields.add(rule.field)
        if "." in key:
            outer, inner = key.split(".", 1)
            nested.setdefault(outer, {})[inner] = value
        else:
            config[key] = value
    for key, rule in family.rules.items():
        if isinstance(rule, Only) and key not in config:
            if "." in key:
                outer, inner = key.split(".", 1)
                nested.setdefault(outer, {}).setdefault(inner, rule.allowed(config)[0])
            elif key in _EXPORTED_ONLY:
                config[key] = rule.allowed(config)[0]
    config.update(nested)
    return config


# Keys export writes although transformers' defaults would do, so the file says what it means.
_EXPORTED_ONLY = {"tie_word_embeddings", "attention_bias", "mlp_bias", "hidden_act", "do_layer_norm_before",
                  "enable_bias", "word_embed_proj_dim", "apply_residual_connection_post_layernorm"}


def _drop_superseded(family: Family, config: dict[str, Any]) -> None:
    """transformers 5 reads RoPE settings from rope_parameters; the older flat keys are not written."""
    if "rope_parameters" in family.nested:
        for key in ("rope_theta", "rotary_pct", "rotary_emb_base"):
            config.pop(key, None)


def config_from_spec(spec: ModelSpec, where: str) -> tuple[Family, dict[str, Any]]:
    """A config.json that transformers reads as the same function as `spec`, or a one-line refusal."""
    dump = spec.model_dump(mode="json")
    want = _arch_view(spec)
    nearest: tuple[int, str, list[str]] | None = None
    for family in FAMILIES.values():
        config = _candidate_config(family, dump)
        _drop_superseded(family, config)
        try:
            _, reading = read_spec_fields(config, where)
            got = ModelSpec.model_validate({**spec_tables(family, reading, spec.model.name)})
        except Exception:  # this family cannot even state the spec's sizes
            continue
        have = _arch_view(got)
        differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if not differ:
            return family, config
        if nearest is None or len(differ) < nearest[0]:
            nearest = (len(differ), family.model_type, differ)
    if nearest is None:
        raise ImportRefused(f"{where}: no transformers class expresses this spec")
    _, name, differ = nearest
    shown = ", ".join(f"{k} = {want.get(k)!r}" for k in differ[:6]) + (" ..." if len(differ) > 6 else "")
    raise ImportRefused(f"{where}: no transformers class expresses this spec; the nearest, {name}, "
                        f"differs in {shown}")
