"""The Llama 2 and Llama 3.1 specs against their official transformers configs.

Each spec, written back as a config by the llama family table, carries the official config's
values (sizes, heads, context, eps, rotary base and scaling), and transformers instantiates
that official config on the meta device with exactly the parameter count taxonc computes.
The configs below are copied from the released config.json files (meta-llama/Llama-2-*-hf and
meta-llama/Llama-3.1-*), keys that do not change the function left out.
"""

from __future__ import annotations

import tomllib

import pytest
import torch

from taxonc.compiler.analysis import count_params
from taxonc.compiler.interop.hf_config import architecture, config_values
from taxonc.compiler.spec import load_spec

from .conftest import ROOT

LLAMA2 = dict(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, hidden_act="silu",
              tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
LLAMA31 = dict(vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, hidden_act="silu",
               tie_word_embeddings=False,
               rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})


def _shape(layers: int, width: int, ff: int, heads: int, kv: int) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=width, intermediate_size=ff, num_attention_heads=heads,
                num_key_value_heads=kv)


OFFICIAL = {
    "llama2-7b": {**LLAMA2, **_shape(32, 4096, 11008, 32, 32)},
    "llama2-13b": {**LLAMA2, **_shape(40, 5120, 13824, 40, 40)},
    "llama2-70b": {**LLAMA2, **_shape(80, 8192, 28672, 64, 8)},
    "llama3.1-8b": {**LLAMA31, **_shape(32, 4096, 14336, 32, 8)},
    "llama3.1-70b": {**LLAMA31, **_shape(80, 8192, 28672, 64, 8)},
    "llama3.1-405b": {**LLAMA31, **_shape(126, 16384, 53248, 128, 8)},
}


def _spec(name: str):
    return load_spec(ROOT / "specs" / f"{name}.toml").spec


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_spec_carries_the_official_config(name: str) -> None:
    ours = config_values("llama", architecture(_spec(name)))
    official = OFFICIAL[name]
    assert {k: ours.get(k) for k in official if k != "rope_parameters"} == \
        {k: v for k, v in official.items() if k != "rope_parameters"}
    assert {k: ours["rope_parameters"].get(k) for k in official["rope_parameters"]} == official["rope_parameters"]


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_full_size_count_equals_transformers(name: str) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(**OFFICIAL[name])
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(cfg)
    assert count_params(_spec(name)).total == sum(p.numel() for p in model.parameters())


def test_lineage_reads_llama_then_llama2_then_llama31() -> None:
    chain, name = [], "llama3.1-8b"
    while name:
        chain.append(name)
        name = tomllib.loads((ROOT / "specs" / f"{name}.toml").read_text()).get("extends")
    assert chain == ["llama3.1-8b", "llama3.1-405b", "llama2-70b", "llama", "recipes/gpt"]
