"""How one config.json key of a Hugging Face model becomes spec values, and back.

A family's table (interop/hf_families.py) gives every key it knows one rule:

- `To`: the value is a spec field (or several, through `convert`); `back` recovers it from a spec.
- `Only`: accepted only at the values that leave the inference function unchanged (a null
  `rope_scaling`, a False `attention_bias`); any other value is refused with `why`.
- `Meta`: harmless at inference (versions, token ids, dropout, init ranges); read and dropped.

A key in no table, or a value a rule refuses, is collected; `read_config` then raises one
ImportRefused that names every such key. Nothing is guessed: an unknown key might change the
function, so it stops the import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import TaxoncError

MISSING = object()  # the key has no default: config.json must give it

Config = Mapping[str, Any]
Fields = dict[str, Any]  # dotted spec field ("dims.d_model") -> value


class ImportRefused(TaxoncError):
    """A checkpoint directory taxonc will not convert; the message is one line naming every cause."""


def _identity(value: Any, config: Config) -> Any:
    return value


@dataclass(frozen=True)
class To:
    """The key's value sets spec `field`. `convert(value, config)` returns the value, or a dict of
    several dotted fields when `field` is "" (one key deciding several spec values).
    `back(spec_dump)` gives the config value for a spec (export); `default` is the value the HF
    class assumes when config.json leaves the key out."""

    field: str
    convert: Callable[[Any, Config], Any] = _identity
    back: Callable[[dict[str, Any]], Any] | None = None
    default: Any = MISSING
    check: Callable[[Any, Config], str | None] | None = None  # a reason the value is refused, or None
    default_origin: str = ""  # where `default` comes from when it is not the transformers class's

    def fields(self, value: Any, config: Config) -> Fields:
        converted = self.convert(value, config)
        return converted if self.field == "" else {self.field: converted}

    def export(self, spec: dict[str, Any]) -> Any:
        if self.back is not None:
            return self.back(spec)
        node: Any = spec
        for part in self.field.split("."):
            node = node[part]
        return node


@dataclass(frozen=True)
class Only:
    """Accepted only at `values` (a value may be a callable of the config, e.g. another key's value)."""

    values: tuple[Any, ...]
    why: str

    def allowed(self, config: Config) -> list[Any]:
        return [v(config) if callable(v) else v for v in self.values]

    def accepts(self, value: Any, config: Config) -> bool:
        return any(_same(value, allowed) for allowed in self.allowed(config))


@dataclass(frozen=True)
class Meta:
    """A key that does not change the function computed at inference."""

    why: str = "metadata"


Rule = To | Only | Meta


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return a == b


def key_of(config: Config, name: str) -> Any:
    """The config value of key `name`; nested keys are dotted (rope_parameters.rope_theta)."""
    node: Any = config
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def flatten(config: Config, nested: frozenset[str]) -> dict[str, Any]:
    """config.json as dotted keys: the keys in `nested` that hold objects are opened one level."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if key in nested and isinstance(value, Mapping):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


@dataclass(frozen=True)
class Refusal:
    key: str
    why: str

    def render(self) -> str:
        return f"{self.key} ({self.why})"


@dataclass
class Reading:
    """What config.json says, in spec terms: each field's value and the key it came from."""

    fields: Fields = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # dotted spec field -> "config.json: key"
    refusals: list[Refusal] = field(default_factory=list)

    def set(self, values: Fields, origin: str) -> None:
        for name, value in values.items():
            self.fields[name] = value
            self.origins[name] = origin


def _shown(value: Any) -> str:
    """A value as config.json spells it (null, true, "silu")."""
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_keys(config: Config, rules: Mapping[str, Rule], nested: frozenset[str]) -> Reading:
    """Apply `rules` to every key of `config`; keys no rule names are refusals."""
    reading = Reading()
    flat = flatten(config, nested)
    for key, value in flat.items():
        rule = rules.get(key)
        if rule is None:
            reading.refusals.append(Refusal(key, "unknown to taxonc's importer for this family; it may change the function"))
        elif isinstance(rule, Only):
            if not rule.accepts(value, config):
                allowed = " or ".join(_shown(v) for v in rule.allowed(config))
                reading.refusals.append(Refusal(key, f"is {_shown(value)}; only {allowed} is supported: {rule.why}"))
        elif isinstance(rule, To):
            reason = rule.check(value, config) if rule.check is not None else None
            if reason is not None:
                reading.refusals.append(Refusal(key, f"is {_shown(value)}; {reason}"))
                continue
            try:
                reading.set(rule.fields(value, config), f"config.json: {key}")
            except (TypeError, ValueError, KeyError) as exc:
                reading.refusals.append(Refusal(key, f"is {_shown(value)}; {exc}"))
    for key, rule in rules.items():  # keys config.json leaves out take the HF class's default
        if isinstance(rule, To) and key not in flat:
            if rule.default is MISSING:
                if not any(isinstance(r, To) and r.field == rule.field and k in flat for k, r in rules.items()):
                    reading.refusals.append(Refusal(key, "is missing and has no default"))
            elif rule.field == "" or rule.field not in reading.fields:
                default = rule.default(config) if callable(rule.default) else rule.default
                origin = rule.default_origin or f"the transformers class's default (config.json has no {key})"
                reading.set(rule.fields(default, config), origin)
    return reading
