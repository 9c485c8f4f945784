"""The shapes of the HF family table (interop.hf) and the conventions several families share.

`Take` says where one taxonc parameter lives in an HF state dict, `Key` which config key gives
one spec value (both ways), `Family` holds one HF model_type's keys, hard-wired conventions and
weight map. The helpers below read and write what LLaMA-style, NeoX-style and T5-style configs
spell the same way (rotary settings, key/value heads, activation names). No torch or
transformers import.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Callable

from ..spec.kinds import Activation, RotaryPairing

Config = dict[str, Any]


class Packing(StrEnum):
    """How one HF tensor holds q, k and v (rows of the output dim)."""

    STACKED = "stacked"    # [q; k; v]: GPT-2's c_attn (after the transpose), Falcon's multi-query qkv
    PER_HEAD = "per-head"  # [q_0; k_0; v_0; q_1; ...]: GPT-NeoX and BLOOM query_key_value


@dataclass(frozen=True)
class Take:
    """One taxonc parameter from the HF state dict.

    `hf` is relative to the scope's HF prefix; `{e}` in it stacks one tensor per expert into a
    leading expert dim. `part` picks q, k or v out of a fused tensor packed as `packing`.
    """

    hf: str
    transpose: bool = False  # GPT-2's Conv1D stores (in, out)
    part: str | None = None  # "q", "k" or "v"
    packing: Packing | None = None


# flat spec values: "table.key" -> value (a selector or sparse pattern stays a dict)
Values = dict[str, Any]


@dataclass(frozen=True)
class Key:
    """A spec value read from one config key. `to_spec` converts the config value and `to_hf` converts
    back (default: as is); `default` is the HF class default, used when the config leaves the key out."""

    spec: str  # dotted spec path, e.g. "dims.d_model"
    hf: str
    default: Any = None
    to_spec: Callable[[Any, Config], Any] | None = None
    to_hf: Callable[[Any], Any] | None = None


@dataclass(frozen=True)
class Family:
    model_type: str
    seq2seq: bool
    keys: tuple[Key, ...]
    fixed: dict[str, Any]                  # spec values the HF code hard-wires
    requires: dict[str, Any]               # config values the fixed conventions assume
    weights: dict[str, dict[str, Take]]    # taxonc scope ("embed", "layers", ...) -> local name -> Take
    prefixes: dict[str, str]               # taxonc scope -> HF prefix ("{i}" is the layer index)
    derived: Callable[[Config], Values] | None = None  # spec values computed from several keys
    exported: Callable[[Values], Config] | None = None  # and the config keys they come back to
    notes: str = ""                        # what the table cannot express, said once

    def read(self, cfg: Config, key: str, default: Any = None) -> Any:
        value = cfg.get(key)
        return default if value is None else value


# --- conventions by config value ------------------------------------------------------------

# HF activation names (transformers.activations.ACT2FN) -> taxonc's dense activation
DENSE_ACTIVATIONS = {
    "gelu": Activation.GELU,
    "gelu_new": Activation.GELU_TANH,
    "gelu_fast": Activation.GELU_TANH,
    "gelu_pytorch_tanh": Activation.GELU_TANH,
    "relu": Activation.RELU,
}
# ... and the gated activation whose gate uses it
GATED_ACTIVATIONS = {
    "silu": Activation.SWIGLU,
    "swish": Activation.SWIGLU,
    "gelu": Activation.GEGLU,
    "gelu_new": Activation.GEGLU_TANH,
    "gelu_pytorch_tanh": Activation.GEGLU_TANH,
}


# the HF name written back for each taxonc activation (ACT2FN knows each in every family here)
HF_ACTIVATION = {Activation.GELU: "gelu", Activation.GELU_TANH: "gelu_new", Activation.RELU: "relu",
                 Activation.SWIGLU: "silu", Activation.GEGLU: "gelu", Activation.GEGLU_TANH: "gelu_new"}


def hf_activation(value: str) -> str:
    return HF_ACTIVATION[Activation(value)]


def dense_activation(name: str, _cfg: Config | None = None) -> str:
    if name not in DENSE_ACTIVATIONS:
        raise KeyError(f"activation {name!r} has no taxonc equivalent (known: {', '.join(DENSE_ACTIVATIONS)})")
    return DENSE_ACTIVATIONS[name].value


def gated_activation(name: str, _cfg: Config | None = None) -> str:
    if name not in GATED_ACTIVATIONS:
        raise KeyError(f"gated activation {name!r} has no taxonc equivalent (known: {', '.join(GATED_ACTIVATIONS)})")
    return GATED_ACTIVATIONS[name].value


def rope_settings(cfg: Config) -> dict[str, Any]:
    """transformers 5 keeps rotary settings in rope_parameters (older configs: rope_theta, rotary_pct)."""
    rope = {**(cfg.get("rope_scaling") or {}), **(cfg.get("rope_parameters") or {})}
    theta = rope.get("rope_theta", cfg.get("rope_theta", cfg.get("rotary_emb_base", 10000.0)))
    fraction = rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", cfg.get("rotary_pct", 1.0)))
    return {"theta": float(theta), "fraction": float(fraction), "type": rope.get("rope_type", rope.get("type", "default")),
            "scaling": {ours: rope[hf] for hf, ours in ROPE_SCALING_KEYS.items() if rope.get(hf) is not None}}


# rope_parameters' scaling keys and the spec's names for them (position.scaling.*)
ROPE_SCALING_KEYS = {"factor": "factor", "original_max_position_embeddings": "original_context",
                     "low_freq_factor": "low_freq_factor", "high_freq_factor": "high_freq_factor",
                     "beta_fast": "beta_fast", "beta_slow": "beta_slow", "attention_factor": "attention_factor"}
SCALED_ROPE_TYPES = ("linear", "yarn", "llama3")  # the rope_type values position.scaling.kind can state


def rope_scaling_values(cfg: Config) -> dict[str, Any]:
    """position.scaling from rope_parameters (or an older config's rope_scaling); nothing for plain RoPE."""
    rope = rope_settings(cfg)
    if rope["type"] == "default":
        return {}
    return {"position.scaling": {"kind": rope["type"], **rope["scaling"]}}


def rope_scaling_config(v: Values) -> Config:
    """rope_parameters' scaling keys for position.scaling (merged into rope_config's object)."""
    scaling = v.get("position.scaling")
    if not scaling:
        return {}
    theirs = {ours: hf for hf, ours in ROPE_SCALING_KEYS.items()}
    return {"rope_type": scaling["kind"], **{theirs[k]: x for k, x in scaling.items() if k != "kind" and x is not None}}


def rotary_values(cfg: Config, pairing: RotaryPairing = RotaryPairing.HALF) -> dict[str, Any]:
    rope = rope_settings(cfg)
    return {"position.kind": "rotary", "position.base": rope["theta"], "position.fraction": rope["fraction"],
            "position.pairing": pairing.value}


def rope_config(v: Values) -> Config:
    return {"rope_parameters": {"rope_type": "default", "rope_theta": v["position.base"],
                                "partial_rotary_factor": v["position.fraction"]}}


def n_kv_heads(v: Values) -> int:
    return {"multi-head": v["dims.n_heads"], "multi-query": 1}.get(v["attention.kind"], v.get("attention.n_kv_heads"))


def d_head(v: Values) -> int:
    return v.get("dims.d_head") or v["dims.d_model"] // v["dims.n_heads"]


def head_dim_values(cfg: Config, hidden: str, heads: str) -> dict[str, Any]:
    """dims.d_head only when the config sets one other than hidden / heads (Mistral, LLaMA 3 style)."""
    d_head = cfg.get("head_dim")
    if d_head and d_head != cfg[hidden] // cfg[heads]:
        return {"dims.d_head": d_head}
    return {}


def attention_values(cfg: Config, heads: str = "num_attention_heads", kv: str = "num_key_value_heads") -> dict[str, Any]:
    n_kv = cfg.get(kv) or cfg[heads]
    if n_kv == cfg[heads]:
        return {"attention.kind": "multi-head"}
    if n_kv == 1:
        return {"attention.kind": "multi-query"}
    return {"attention.kind": "grouped-query", "attention.n_kv_heads": n_kv}


# --- the weight maps, shared where families share code ---------------------------------------

def qkv_takes(fused: str, packing: Packing, transpose: bool = False, bias: bool = True) -> dict[str, Take]:
    suffixes = ("weight", "bias") if bias else ("weight",)
    return {f"{r}.{wb}": Take(f"{fused}.{wb}", transpose=transpose and wb == "weight", part=r, packing=packing)
            for r in "qkv" for wb in suffixes}


def linear_takes(ours: str, theirs: str, bias: bool = True, transpose: bool = False) -> dict[str, Take]:
    out = {f"{ours}.weight": Take(f"{theirs}.weight", transpose=transpose)}
    if bias:
        out[f"{ours}.bias"] = Take(f"{theirs}.bias")
    return out


def norm_takes(ours: str, theirs: str, bias: bool = True) -> dict[str, Take]:
    return linear_takes(ours, theirs, bias)
