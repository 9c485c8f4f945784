"""config.json -> a spec whose every value names its origin, and a spec -> config.json.

Both directions go through the family tables (interop/hf.py); interop/hf_keys.py
accounts for every key first. Export is checked by the forward direction: the config written
for a spec must read back as the same architecture, else no transformers class expresses the
spec and export refuses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec.dump import toml_value
from ..spec.model import ModelSpec
from .hf import FAMILIES
from .hf_config import architecture, config_values, spec_values
from .hf_schema import Family
from .hf_keys import NESTED, ImportRefused, account, shown

CONFIG = "config.json"
MAX_CONFIG_BYTES = 1 << 20  # real configs are a few KB

SECTION_ORDER = ("model", "dims", "encoder", "attention", "position", "norm", "mlp", "block", "bias", "moe", "tokenizer")

# what export writes as config.json's architectures
HF_CLASSES = {
    "gpt2": "GPT2LMHeadModel", "gptj": "GPTJForCausalLM", "gpt_neox": "GPTNeoXForCausalLM", "opt": "OPTForCausalLM",
    "bloom": "BloomForCausalLM", "llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
    "mixtral": "MixtralForCausalLM", "falcon": "FalconForCausalLM", "t5": "T5ForConditionalGeneration",
    "switch_transformers": "SwitchTransformersForConditionalGeneration", "qwen3": "Qwen3ForCausalLM",
    "olmo2": "Olmo2ForCausalLM",
}


@dataclass
class Reading:
    """The spec values config.json implies, each with where it came from."""

    fields: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def read_config_json(directory: Path) -> dict[str, Any]:
    from taxonc.runtime.files import present, why_not_regular

    path = directory / CONFIG
    if not present(path):
        raise ImportRefused(f"{directory}: no {CONFIG}; a Hugging Face model directory has config.json next to its weights")
    reason = why_not_regular(path)
    if reason is not None:  # a FIFO or a device would block or never end
        raise ImportRefused(f"{path}: {reason}; config.json is a regular file")
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
    family = FAMILIES.get(config.get("model_type")) if isinstance(config.get("model_type"), str) else None
    if family is None:
        raise ImportRefused(f"{where}: model_type {shown(config.get('model_type'))} is not supported "
                            f"(supported: {', '.join(sorted(FAMILIES))})")
    return family


def _modelling_file(family: Family) -> str:
    return f"transformers modeling_{family.model_type}.py"


def _probes(config: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`config` without `key`, and with its value changed (a flipped bool, a doubled number): the
    derived values that move under either came from that key."""
    outer, _, inner = key.partition(".")
    node = config[outer] if inner else config
    name = inner or key
    value = node[name]
    variants = [{k: v for k, v in node.items() if k != name}]
    if isinstance(value, bool):
        variants.append({**node, name: not value})
    elif isinstance(value, (int, float)):
        variants.append({**node, name: value * 2 if value else type(value)(1)})
    return [{**config, outer: v} if inner else v for v in variants]


def _origins(family: Family, config: dict[str, Any], values: dict[str, Any]) -> dict[str, str]:
    """Where each value came from. The derived values are traced by leaving each config key out,
    and changing it, in turn and seeing which values move."""
    origins = {name: _modelling_file(family) for name in family.fixed}
    for key in family.keys:
        present = config.get(key.hf) is not None
        origins[key.spec] = f"config.json: {key.hf}" if present else f"transformers' default (config.json has no {key.hf})"
    derived = set(family.derived(config)) if family.derived else set()
    traced: dict[str, list[str]] = {}
    keys = [k for k in config if k not in NESTED] + [f"{k}.{s}" for k in NESTED if isinstance(config.get(k), dict)
                                                      for s in config[k]]
    for key in keys:
        moved: set[str] = set()
        for probe in _probes(config, key):
            try:
                changed = spec_values(family.model_type, probe)
            except (KeyError, ValueError, TypeError, ZeroDivisionError):
                continue
            moved |= {name for name in derived if changed.get(name) != values.get(name)}
        for name in sorted(moved):
            traced.setdefault(name, []).append(key)
    for name in derived:
        if name in traced:
            origins[name] = "config.json: " + ", ".join(traced[name])
        else:
            origins[name] = f"{_modelling_file(family)} (no config key changes it)"
    return origins


def read_spec_fields(config: dict[str, Any], where: str) -> tuple[Family, Reading]:
    """The spec values config.json implies, each with its origin; every refused key in one error."""
    family = family_for(config, where)
    refusals = account(family.model_type, config)
    for key in family.keys:  # a converter that refuses a value names its key
        if key.to_spec is not None and config.get(key.hf) is not None:
            try:
                key.to_spec(config[key.hf], config)
            except (KeyError, ValueError) as exc:
                refusals.append(f"{key.hf} (is {shown(config[key.hf])}; {str(exc).strip(chr(34) + chr(39))})")
    if refusals:
        raise ImportRefused(f"{where}: {len(refusals)} key(s) taxonc cannot import as the same function: "
                            + "; ".join(refusals))
    try:
        values = spec_values(family.model_type, config)
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
        raise ImportRefused(f"{where}: cannot be read as a {family.model_type} config ({str(exc).strip(chr(34))})") from None
    return family, Reading(values, _origins(family, config, values))


def _tables(fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    for dotted, value in fields.items():
        section, key = dotted.split(".", 1)
        tables.setdefault(section, {})[key] = value.value if hasattr(value, "value") else value
    return tables


def spec_tables(family: Family, reading: Reading, name: str) -> dict[str, dict[str, Any]]:
    return _tables({"model.name": name, **reading.fields})


def spec_toml(family: Family, reading: Reading, name: str, extra: dict[str, tuple[Any, str]] | None = None) -> str:
    """The spec as TOML, every value followed by a comment naming where it came from."""
    notes = f"Imported from a Hugging Face checkpoint (model_type {family.model_type})."
    if family.notes:
        notes += " " + family.notes
    fields = {"model.name": (name, "the checkpoint directory's name"), "model.notes": (notes, "taxonc import")}
    fields.update({k: (v, reading.origins.get(k, "")) for k, v in sorted(reading.fields.items())})
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

def arch_view(spec: ModelSpec) -> dict[str, Any]:
    """hf_config.architecture with sizes as derived, so a d_ff from ff_ratio equals the same d_ff written out."""
    from ..spec import derive

    view = architecture(spec)
    arch = derive(spec)
    view.update({"dims.d_head": arch.d_head, "dims.d_ff": arch.d_ff})
    for key in ("dims.ff_ratio", "dims.ff_multiple_of"):  # d_ff is compared instead
        view.pop(key, None)
    return view


def config_from_spec(spec: ModelSpec, where: str) -> tuple[Family, dict[str, Any]]:
    """A config.json that transformers reads as the same function as `spec`, or a one-line refusal.

    Each family writes the config its table's inverse gives (hf_config.config_values); the first
    whose config reads back (through the same accounting as an import) to the same architecture
    wins. Sizes are compared as derived, so d_ff from ff_ratio equals the same d_ff written out.
    """
    want = arch_view(spec)
    values = architecture(spec)
    nearest: tuple[int, str, list[str]] | None = None
    for family in FAMILIES.values():
        try:
            config = {"architectures": [HF_CLASSES[family.model_type]], **config_values(family.model_type, values)}
            _, reading = read_spec_fields(config, where)
            have = arch_view(ModelSpec.model_validate(spec_tables(family, reading, spec.model.name)))
        except Exception:  # noqa: BLE001 - this family cannot even state the spec's sizes
            continue
        differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
        if not differ:
            return family, config
        if nearest is None or len(differ) < nearest[0]:
            nearest = (len(differ), family.model_type, differ)
    if nearest is None:
        raise ImportRefused(f"{where}: no transformers class expresses this spec")
    _, name, differ = nearest
    listed = ", ".join(f"{k} = {shown(want.get(k))}" for k in differ[:6]) + (" ..." if len(differ) > 6 else "")
    raise ImportRefused(f"{where}: no transformers class expresses this spec; the nearest, {name}, differs in {listed}")
