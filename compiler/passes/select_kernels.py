"""Kernel selection for the Triton backend: mark graph regions that map to a kernel.

Legality only: each rule either marks a node with `attrs["kernel"]` or logs why not. The
torch code path stays for everything unmarked.
"""

from __future__ import annotations

from taxonc.compiler.ir.graph import Graph, Node
from taxonc.compiler.ir.ops import Op

from .manager import PassLog, register_pass

FLASH_MASKS = ("causal", "full", "prefix", "locally-banded", "strided", "fixed")


def _attention(node: Node) -> str | None:
    a = node.attrs
    if a["relative"] and a["relative"]["kind"] == "xl":
        return "Transformer-XL attention has a query-dependent position term the flash kernel does not compute"
    if a["relative"]:
        return "T5 relative-bias tables are not in the flash kernel"
    if a["mask"]["kind"] not in FLASH_MASKS or a["mask"].get("bidirectional_prefix"):
        return f"mask {a['mask']} is not in the flash kernel"
    return None


def _glu_source(g: Graph, node: Node) -> Node | None:
    """The 2-way split of one projection that feeds this GLU, if that is where gate and up come from."""
    producer = g.producer.get(node.inputs[0])
    if producer is None:
        return None
    split = g.node(producer)
    if split.op != Op.SPLIT or split.outputs != node.inputs:
        return None
    return split


@register_pass("select_kernels")
def select_kernels(g: Graph, log: PassLog) -> Graph:
    for node in list(g.nodes()):
        a, why = node.attrs, None
        if node.op == Op.NORM:
            a["kernel"] = "rms_norm" if a["kind"] == "rmsnorm" else "layer_norm"
        elif node.op == Op.ADD_NORM:
            if a["residual_scale"] != 1.0:
                why = "DeepNorm scales the residual; the fused kernel adds it unscaled"
            elif len(node.inputs) != 2:
                why = "a parallel block adds three branches; the fused kernel adds two"
            else:
                a["kernel"] = "rms_norm+residual" if a["kind"] == "rmsnorm" else "layer_norm+residual"
        elif node.op == Op.LINEAR and a.get("epilogue"):
            a["kernel"] = "bias_act"
        elif node.op == Op.GLU:
            if _glu_source(g, node) is None:
                why = "gate and up are slices of a wider projection (parallel block), not one packed tensor"
            else:
                a["kernel"] = "glu"
        elif node.op == Op.ATTENTION:
            why = _attention(node)
            if why is None:
                a["kernel"] = "flash_attention" + ("+rotary" if a["rotary"] else "")
        elif node.op == Op.MOE:
            if a["activation"] == "solu":
                why = "the MoE kernel has no SoLU epilogue"
            else:
                a["kernel"] = "moe"
        elif node.op == Op.ACTIVATION and a["kind"] == "solu":
            consumers = g.consumers(node.outputs[0])
            if len(consumers) == 1 and consumers[0].op == Op.NORM and consumers[0].attrs["kind"] == "layernorm":
                a["kernel"] = "solu_layer_norm"
                consumers[0].attrs["kernel"] = "solu_layer_norm(fused)"
            else:
                why = "SoLU without a LayerNorm right after it"
        if why:
            log.refuse("select_kernels", node.id, why)
        elif "kernel" in a:
            log.apply("select_kernels", f"{node.id}:{a['kernel']}")
    return g
