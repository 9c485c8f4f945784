"""Property checks callable on any spec, at tiny scale.

Each check returns a PropertyResult. A failure carries a counterexample a person can act on:
the token ids, the first differing position and the largest absolute difference.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch

from taxonc.compiler.analysis import count_params
from taxonc.compiler.backends.registry import get_backend
from taxonc.compiler.compile import Compiled, compile_spec
from taxonc.compiler.ir import build_graph
from taxonc.compiler.ir.interpret import run_graph
from taxonc.compiler.passes import run_pipeline
from taxonc.compiler.passes.weights import fuse_state, random_state
from taxonc.compiler.spec.model import ModelSpec
from taxonc.runtime.artifact import load_source
from taxonc.runtime.inputs import extra_inputs

Mutation = Callable[[str], str]


@dataclass
class PropertyResult:
    name: str
    ok: bool | None  # None: does not apply to this spec
    detail: str = ""
    counterexample: dict[str, Any] = field(default_factory=dict)


@dataclass
class Subject:
    """A spec compiled at tiny scale, its emitted module, and a float64 model with test weights."""

    path: str
    compiled: Compiled
    module: ModuleType
    model: torch.nn.Module
    state: dict[str, torch.Tensor]  # weights of the lowered (unfused) graph

    @property
    def spec(self) -> ModelSpec:
        return self.compiled.spec


def load_subject(path: str | Path, scale: str = "tiny", mutate: Mutation | None = None, seed: int = 0,
                 sets: list[str] | None = None) -> Subject:
    """Compile `path`; `mutate` may rewrite the emitted source (used to prove checks catch bugs)."""
    compiled = compile_spec(path, scale=scale, sets=sets)
    source = compiled.files["model.py"]
    module = load_source(mutate(source) if mutate else source, "check")
    state = random_state(build_graph(compiled.spec), seed)
    model = module.build(dtype=torch.float64).eval()
    model.load_state_dict(fuse_state(compiled.graph, state))
    return Subject(str(path), compiled, module, model, state)


def _first_diff(a: torch.Tensor, b: torch.Tensor, atol: float) -> tuple[int, float]:
    diff = (a - b).abs().amax(dim=tuple(i for i in range(a.dim()) if i != 1))
    bad = (diff > atol).nonzero()
    return (int(bad[0]) if bad.numel() else -1), float(diff.max()) if diff.numel() else 0.0


def _capped_at_inference(s: Subject) -> str:
    """Why a per-position property does not hold for a spec whose MoE caps capacity at inference, or ""."""
    if s.spec.moe is None or s.spec.moe.inference_capacity_factor is None:
        return ""
    return ("moe.inference_capacity_factor: tokens of one call compete for expert capacity, so an output depends "
            "on the call's other tokens")


def check_causality(s: Subject, examples: int = 5, seq: int = 16, seed: int = 0) -> PropertyResult:
    """Changing token t never changes outputs before t (outside a prefix-LM's prefix)."""
    if why := _capped_at_inference(s):
        return PropertyResult("causality", None, why)
    gen = torch.Generator().manual_seed(seed)
    vocab = s.spec.dims.vocab_size
    prefix_lm = s.spec.model.structure == "prefix-lm"
    prefix = seq // 2 if prefix_lm else 0
    for _ in range(examples):
        ids = torch.randint(0, vocab, (1, seq), generator=gen)
        t = int(torch.randint(prefix, seq, (1,), generator=gen))
        kw = extra_inputs(s.spec, 1, seq, generator=gen, dtype=torch.float64)
        other = ids.clone()
        other[0, t] = (ids[0, t] + 1) % vocab
        with torch.no_grad():
            a, b = s.model(ids, prefix_len=prefix, **kw), s.model(other, prefix_len=prefix, **kw)
        pos, diff = _first_diff(a[:, :t], b[:, :t], 1e-9)
        if pos >= 0:
            return PropertyResult("causality", False, f"changing token {t} changed output {pos}",
                                  {"token_ids": ids[0].tolist(), "changed_position": t, "first_differing_output": pos, "max_abs_diff": diff})
    if prefix_lm:  # inside the prefix attention must look both ways
        ids = torch.randint(0, vocab, (1, seq), generator=gen)
        kw = extra_inputs(s.spec, 1, seq, generator=gen, dtype=torch.float64)
        other = ids.clone()
        other[0, prefix - 1] = (ids[0, prefix - 1] + 1) % vocab
        with torch.no_grad():
            a, b = s.model(ids, prefix_len=prefix, **kw), s.model(other, prefix_len=prefix, **kw)
        if torch.allclose(a[:, : prefix - 1], b[:, : prefix - 1]):
            return PropertyResult("causality", False, "the prefix is not bidirectional", {"token_ids": ids[0].tolist(), "prefix_len": prefix})
    return PropertyResult("causality", True, f"{examples} examples" + (" + prefix bidirectionality" if prefix_lm else ""))


def check_kv_cache(s: Subject, examples: int = 2, prompt: int = 5, total: int = 24, seed: int = 0) -> PropertyResult:
    """Prefill then one token at a time through the cache gives the full forward pass's logits."""
    if why := _capped_at_inference(s):
        return PropertyResult("kv_cache", None, why)
    gen = torch.Generator().manual_seed(seed)
    prefix = prompt if s.spec.model.structure == "prefix-lm" else 0
    for _ in range(examples):
        ids = torch.randint(0, s.spec.dims.vocab_size, (1, total), generator=gen)
        kw = extra_inputs(s.spec, 1, total, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            full = s.model(ids, prefix_len=prefix, **kw)
            cache = s.model.new_cache()
            steps = [s.model(ids[:, :prompt], prefix_len=prefix, cache=cache, **kw)]
            steps += [s.model(ids[:, t : t + 1], cache=cache, **kw) for t in range(prompt, total)]
        pos, diff = _first_diff(torch.cat(steps, dim=1), full, 1e-9)
        if pos >= 0:
            return PropertyResult("kv_cache", False, f"cached logits differ from position {pos}",
                                  {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})
    return PropertyResult("kv_cache", True, f"{examples} sequences of {total}")


def check_param_count(s: Subject) -> PropertyResult:
    actual = sum(p.numel() for p in s.model.parameters())
    expected = count_params(s.spec).total
    return PropertyResult("param_count", actual == expected, f"module {actual:,} vs analytic {expected:,}",
                          {} if actual == expected else {"module": actual, "analytic": expected})


def _graph_logits(spec: ModelSpec, state: dict[str, torch.Tensor], ids: torch.Tensor, kw: dict[str, torch.Tensor]) -> torch.Tensor:
    return run_graph(build_graph(spec), state, {"input_ids": ids, **kw})["head.logits"]


def check_backends(s: Subject, backends: tuple[str, ...] = ("torch",), seed: int = 0) -> PropertyResult:
    """Every backend computes what the graph says (the torch backend against the interpreter)."""
    for name in backends:
        get_backend(name)  # a misspelt backend is a UsageError, not a silent pass
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, s.spec.dims.vocab_size, (2, 16), generator=gen)
    kw = extra_inputs(s.spec, 2, 16, generator=gen, dtype=torch.float64)
    reference = _graph_logits(s.spec, s.state, ids, kw)
    with torch.no_grad():
        out = s.model(ids, **kw)
    pos, diff = _first_diff(out, reference, 1e-9)
    if pos >= 0:
        return PropertyResult("backends", False, "torch backend differs from the graph interpreter",
                              {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})
    checked = ["torch"]
    for backend in backends:
        if backend == "mlir":
            from taxonc.compiler.backends.mlir_export import export_mlir
            from taxonc.compiler.backends.mlir_iree import run_linalg

            model32 = s.module.build(dtype=torch.float32).eval()
            model32.load_state_dict({k: v.float() for k, v in s.model.state_dict().items()})
            kw32 = {k: v.float() if v.is_floating_point() else v for k, v in kw.items()}
            with torch.no_grad():
                expected = model32(ids, **kw32)
            got = run_linalg(export_mlir(model32, (ids,), kw32, "linalg", False), ids, **kw32)
            pos, diff = _first_diff(got.to(expected.dtype), expected, 1e-4)
            if pos >= 0:
                return PropertyResult("backends", False, "IREE (linalg) differs from torch",
                                      {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})
            checked.append("mlir (linalg via IREE)")
        elif backend == "triton":
            import os

            if not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"):
                return PropertyResult("backends", None, "triton needs a GPU or TRITON_INTERPRET=1")
            kernel = compile_spec(s.path, scale="tiny", backend="triton")
            module = load_source(kernel.files["model.py"], "check_triton")
            model32 = module.build(dtype=torch.float32).eval()
            model32.load_state_dict({k: v.float() for k, v in s.model.state_dict().items()})
            kw32 = {k: v.float() if v.is_floating_point() else v for k, v in kw.items()}
            with torch.no_grad():
                got = model32(ids, **kw32).double()
            pos, diff = _first_diff(got, reference, 1e-4)
            if pos >= 0:
                return PropertyResult("backends", False, "the Triton backend differs from the graph",
                                      {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})
            checked.append("triton")
    return PropertyResult("backends", True, " and ".join(checked) + " agree with the graph interpreter")


def _variant(spec: ModelSpec, **changes: Any) -> ModelSpec:
    data = spec.model_dump(mode="python", exclude_none=True)
    for dotted, value in changes.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return ModelSpec.model_validate(data, strict=False)


def check_gqa_equals_mha(s: Subject, seed: int = 0) -> PropertyResult:
    """Grouped or multi-query attention equals multi-head attention whose key/value heads are copies."""
    spec = s.spec
    if spec.attention.kind == "multi-head":
        mha = spec
        gqa = _variant(spec, **{"attention.kind": "grouped-query", "attention.n_kv_heads": spec.dims.n_heads})
    else:
        gqa, mha = spec, _variant(spec, **{"attention.kind": "multi-head", "attention.n_kv_heads": None})
    from taxonc.compiler.spec.derive import derive

    group = derive(mha).n_kv_heads // derive(gqa).n_kv_heads
    d_head = derive(gqa).d_head
    state = random_state(build_graph(gqa), seed)
    mha_state = dict(state)
    for name, tensor in state.items():
        if name.rsplit(".", 2)[-2] in ("k", "v", "cross_k", "cross_v") and group > 1:  # Flamingo xattn is always multi-head
            heads = tensor.unflatten(0, (-1, d_head)) if tensor.dim() >= 1 else tensor
            mha_state[name] = heads.repeat_interleave(group, dim=0).flatten(0, 1)
        if name.endswith("kv_proj.weight") or name.endswith("kv_proj.bias"):
            k, v = tensor.chunk(2, dim=0)
            mha_state[name] = torch.cat([x.unflatten(0, (-1, d_head)).repeat_interleave(group, 0).flatten(0, 1) for x in (k, v)])
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.dims.vocab_size, (1, 16), generator=gen)
    kw = extra_inputs(spec, 1, 16, generator=gen, dtype=torch.float64)
    a, b = _graph_logits(gqa, state, ids, kw), _graph_logits(mha, mha_state, ids, kw)
    pos, diff = _first_diff(a, b, 1e-9)
    return PropertyResult("gqa_equals_mha", pos < 0, f"{derive(gqa).n_kv_heads} kv heads vs {derive(mha).n_kv_heads} copies",
                          {} if pos < 0 else {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})


def check_moe_one_expert(s: Subject, seed: int = 0) -> PropertyResult:
    """A mixture of one expert with top-1 routing equals the dense MLP with that expert's weights."""
    spec = s.spec
    if spec.moe is not None and spec.moe.activation and spec.moe.activation != spec.mlp.activation:
        spec = _variant(spec, **{"mlp.activation": spec.moe.activation})
    dense = _variant(spec, moe=None)
    moe = _variant(dense, moe={"n_experts": 1, "top_k": 1, "layers": {"every": 1}, "router": "switch"})
    state = random_state(build_graph(moe), seed)
    dense_state = {k: v for k, v in state.items() if ".moe." not in k}
    glu = dense.mlp.activation.gated
    for name, tensor in state.items():
        if ".moe." not in name:
            continue
        layer, local = name.split(".moe.")
        if local == "w_in":
            if glu:
                gate, up = tensor[0].chunk(2, dim=0)
                dense_state[f"{layer}.mlp_gate.weight"], dense_state[f"{layer}.mlp_up.weight"] = gate, up
            else:
                dense_state[f"{layer}.mlp_in.weight"] = tensor[0]
        elif local == "b_in":
            if glu:
                dense_state[f"{layer}.mlp_gate.bias"], dense_state[f"{layer}.mlp_up.bias"] = tensor[0].chunk(2)
            else:
                dense_state[f"{layer}.mlp_in.bias"] = tensor[0]
        elif local == "w_out":
            dense_state[f"{layer}.mlp_out.weight"] = tensor[0]
        elif local == "b_out":
            dense_state[f"{layer}.mlp_out.bias"] = tensor[0]
        elif local.startswith("solu_norm."):
            dense_state[f"{layer}.ln_solu.{local.split('.', 1)[1]}"] = tensor
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, spec.dims.vocab_size, (1, 16), generator=gen)
    kw = extra_inputs(spec, 1, 16, generator=gen, dtype=torch.float64)
    a, b = _graph_logits(moe, state, ids, kw), _graph_logits(dense, dense_state, ids, kw)
    pos, diff = _first_diff(a, b, 1e-9)
    return PropertyResult("moe_one_expert", pos < 0, "one expert, top-1, vs the dense MLP",
                          {} if pos < 0 else {"token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})


def check_passes(s: Subject, seed: int = 0) -> PropertyResult:
    """Every prefix of the fusion pipeline computes the lowered graph's logits."""
    from taxonc.compiler.passes import PIPELINE

    graph = build_graph(s.spec)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, s.spec.dims.vocab_size, (1, 16), generator=gen)
    kw = extra_inputs(s.spec, 1, 16, generator=gen, dtype=torch.float64)
    reference = run_graph(graph, s.state, {"input_ids": ids, **kw})["head.logits"]
    fused, log = run_pipeline(graph)
    out = run_graph(fused, fuse_state(fused, s.state), {"input_ids": ids, **kw})["head.logits"]
    pos, diff = _first_diff(out, reference, 1e-9)
    if pos >= 0:  # find the first pass that broke it
        for i in range(1, len(PIPELINE) + 1):
            partial, _ = run_pipeline(graph, PIPELINE[:i])
            if _first_diff(run_graph(partial, fuse_state(partial, s.state), {"input_ids": ids, **kw})["head.logits"], reference, 1e-9)[0] >= 0:
                return PropertyResult("passes", False, f"{PIPELINE[i - 1]} changed the logits",
                                      {"pass": PIPELINE[i - 1], "token_ids": ids[0].tolist(), "first_differing_position": pos, "max_abs_diff": diff})
    return PropertyResult("passes", pos < 0, f"{len(log.applied)} fusions applied")


def check_save_load(s: Subject) -> PropertyResult:
    from taxonc.runtime.weights import load_weights, save_weights

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights.safetensors"
        save_weights(s.model, path, s.compiled.digest, s.spec.model.name)
        fresh = s.module.build(dtype=torch.float64).eval()
        load_weights(fresh, path)
    ids = torch.randint(0, s.spec.dims.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    kw = extra_inputs(s.spec, 1, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        same = torch.equal(s.model(ids, **kw), fresh(ids, **kw))
    return PropertyResult("save_load", same, "safetensors round trip")


def check_toml_round_trip(s: Subject) -> PropertyResult:
    from taxonc.compiler.spec import load_spec
    from taxonc.compiler.spec.dump import dump_spec

    original = load_spec(s.path).spec
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spec.toml"
        path.write_text(dump_spec(original))
        again = load_spec(path).spec
    return PropertyResult("toml_round_trip", again == original, "resolved spec -> TOML -> resolved spec")


PROPERTIES: dict[str, Callable[..., PropertyResult]] = {
    "causality": check_causality,
    "kv_cache": check_kv_cache,
    "param_count": check_param_count,
    "backends": check_backends,
    "gqa_equals_mha": check_gqa_equals_mha,
    "moe_one_expert": check_moe_one_expert,
    "passes": check_passes,
    "save_load": check_save_load,
    "toml_round_trip": check_toml_round_trip,
}


def check_subject(s: Subject, examples: int = 5, backends: tuple[str, ...] = ("torch",), only: list[str] | None = None) -> list[PropertyResult]:
    results = []
    for name, fn in PROPERTIES.items():
        if only and name not in only:
            continue
        if name == "causality":
            results.append(fn(s, examples=examples))
        elif name == "kv_cache":
            results.append(fn(s, examples=max(1, examples // 2)))
        elif name == "backends":
            results.append(fn(s, backends=backends))
        else:
            results.append(fn(s))
    return results
