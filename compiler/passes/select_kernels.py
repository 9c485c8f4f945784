"""Kernel selection for the Triton backend: mark graph nodes that map to a fused kernel.

Legality only: each rule either sets `node.kernel` or logs why not. The torch code path
stays for everything unmarked.
"""

from __future__ import annotations

from ..ir.attrs import Activation, Kernel, NormFn, RelativeXL
from ..ir.graph import Graph, Node
from ..ir.ops import Op
from .manager import PassLog, register_pass


def _attention_refusal(node: Node) -> str | None:
    a = node.attrs
    if isinstance(a.relative, RelativeXL):
        return "Transformer-XL attention has a query-dependent position term the flash kernel does not compute"
    if a.relative is not None:
        return "T5 relative-bias tables are not in the flash kernel"
    if a.mask.bidirectional_prefix:
        return f"the {a.mask.kind.value} mask of a prefix LM (bidirectional prefix) is not in the flash kernel"
    return None


def _glu_source(g: Graph, node: Node) -> Node | None:
    """The 2-way split of one projection that feeds this GLU, if that is where gate and up come from."""
    split = g.producer_of(node.inputs[0])
    if split is None or split.op != Op.SPLIT or split.outputs != node.inputs:
        return None
    return split


def _choose(g: Graph, node: Node) -> tuple[Kernel | None, str | None]:
    """(kernel, None) or (None, why not) or (None, None) when no kernel applies to this op at all."""
    a = node.attrs
    if node.op == Op.NORM:
        if a.heads > 1:
            return None, "a per-head QK-norm normalises slices of a row; the norm kernels normalise whole rows"
        return (Kernel.RMS_NORM if a.kind is NormFn.RMSNORM else Kernel.LAYER_NORM), None
    if node.op == Op.ADD_NORM:
        if a.residual_scale != 1.0:
            return None, "DeepNorm scales the residual; the fused kernel adds it unscaled"
        if len(node.inputs) != 2:
            return None, "a parallel block adds three branches; the fused kernel adds two"
        return (Kernel.RMS_NORM_RESIDUAL if a.kind is NormFn.RMSNORM else Kernel.LAYER_NORM_RESIDUAL), None
    if node.op == Op.LINEAR and a.epilogue:
        return Kernel.BIAS_ACT, None
    if node.op == Op.GLU:
        if _glu_source(g, node) is None:
            return None, "gate and up are slices of a wider projection (parallel block), not one packed tensor"
        return Kernel.GLU, None
    if node.op == Op.ATTENTION:
        why = _attention_refusal(node)
        if why:
            return None, why
        return (Kernel.FLASH_ATTENTION_ROTARY if a.rotary else Kernel.FLASH_ATTENTION), None
    if node.op == Op.MOE:
        if a.activation is Activation.SOLU:
            return None, "the MoE kernel has no SoLU epilogue"
        return Kernel.MOE, None
    if node.op == Op.ACTIVATION and a.kind is Activation.SOLU:
        readers = g.consumers(node.outputs[0])
        if len(readers) == 1 and readers[0].op == Op.NORM and readers[0].attrs.kind is NormFn.LAYERNORM:
            return Kernel.SOLU_LAYER_NORM, None
        return None, "SoLU without a LayerNorm right after it"
    return None, None


@register_pass("select_kernels")
def select_kernels(g: Graph, log: PassLog) -> Graph:
    for node in list(g.nodes()):
        if node.kernel is not None:
            continue  # chosen together with an earlier node
        kernel, why = _choose(g, node)
        if why:
            log.refuse("select_kernels", node.id, why)
        elif kernel is not None:
            g.set_kernel(node.id, kernel)
            log.apply("select_kernels", node.id, kernel.value)
            if kernel is Kernel.SOLU_LAYER_NORM:
                norm = g.consumers(node.outputs[0])[0]
                g.set_kernel(norm.id, Kernel.SOLU_LAYER_NORM_CONSUMED)
    return g
