"""The Triton backend: the torch backend's module, with kernel-marked ops calling taxonc.kernels.

Only nodes that select_kernels marked change; everything else is emitted exactly as the
torch backend emits it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ...ir.attrs import Kernel
from ...ir.graph import Graph, Node
from ...ir.ops import Op
from ...spec.model import ModelSpec
from ..torch_src.defs import module_defs
from ..torch_src.emit import ScopeEmitter, emit_model, mask_expr
from . import prelude as triton_prelude

IMPORTS = [
    "",
    "# Triton kernels; on a CPU they run under TRITON_INTERPRET=1",
    "from taxonc.kernels import glu as glu_kernels, moe as moe_kernels, norms as norm_kernels",
    "from taxonc.kernels.attention import flash_attention",
    "from taxonc.kernels.rotary import rotary as rotary_kernel",
]


@lru_cache(maxsize=1)
def _defs() -> dict[str, str]:
    return module_defs(triton_prelude)


class _KernelScopeEmitter(ScopeEmitter):
    def op_norm(self, node: Node) -> None:
        kernel = node.kernel
        if kernel is None:
            return super().op_norm(node)
        self.code.init.append(f"self.{node.name} = {self.node_norm(node)}")
        if kernel is Kernel.SOLU_LAYER_NORM_CONSUMED:
            return  # computed by the SoLU kernel that feeds it
        src = self.ref(node.inputs[0])
        if kernel is Kernel.RMS_NORM:
            call = f"norm_kernels.rms_norm({src}, self.{node.name}.weight, {node.attrs.eps!r})[0]"
        else:
            call = f"norm_kernels.layer_norm({src}, self.{node.name}.weight, self.{node.name}.bias, {node.attrs.eps!r})[0]"
        self.line(node, f"{self.out(node)} = {call}")

    def op_add_norm(self, node: Node) -> None:
        kernel = node.kernel
        if kernel is None:
            return super().op_add_norm(node)
        self.code.init.append(f"self.{node.name} = {self.node_norm(node)}")
        residual, branch = (self.ref(v) for v in node.inputs)
        total, normed = self.out(node, 0), self.out(node, 1)
        if kernel is Kernel.RMS_NORM_RESIDUAL:
            call = f"norm_kernels.rms_norm({branch}, self.{node.name}.weight, {node.attrs.eps!r}, residual={residual})"
        else:
            call = f"norm_kernels.layer_norm({branch}, self.{node.name}.weight, self.{node.name}.bias, {node.attrs.eps!r}, residual={residual})"
        self.line(node, f"{normed}, {total} = {call}  # fused residual add + norm", [node.outputs[1], node.outputs[0]])

    def op_linear(self, node: Node) -> None:
        if node.kernel is not Kernel.BIAS_ACT:
            return super().op_linear(node)
        self.code.init.append(f"self.{node.name} = {self.linear_ctor(node)}")
        src = self.ref(node.inputs[0])
        self.line(node, f"{self.out(node)} = glu_kernels.bias_act(F.linear({src}, self.{node.name}.weight), "
                        f"self.{node.name}.bias, {node.attrs.epilogue.value!r})")

    def op_glu(self, node: Node) -> None:
        if node.kernel is not Kernel.GLU:
            return super().op_glu(node)
        packed = self.ref(self.g.node(self.g.producer[node.inputs[0]]).inputs[0])
        self.line(node, f"{self.out(node)} = glu_kernels.glu({packed}, {node.attrs.kind.value!r})")

    def op_attention(self, node: Node) -> None:
        if node.kernel is None:
            return super().op_attention(node)
        a = node.attrs
        q, k, v = (self.ref(x) for x in node.inputs[:3])
        args = [*self.rotary_inputs(node, q, k), v, mask_expr(a.mask), *self.heads(node),
                *self.attention_kwargs(node, offset=a.cached)]
        self.line(node, f"{self.out(node)} = kernel_attention({', '.join(args)})")

    def op_moe(self, node: Node) -> None:
        if node.kernel is not Kernel.MOE:
            return super().op_moe(node)
        a = node.attrs
        self.code.init.append(f"self.{node.name} = {self.moe_ctor(node)}")
        m = f"self.{node.name}"
        self.line(node, f"{self.out(node)}, {m}.aux_loss = moe_kernels.moe_forward({self.ref(node.inputs[0])}, {m}.router.weight, "
                        f"{m}.w_in, {m}.b_in, {m}.w_out, {m}.b_out, {a.top_k}, {a.capacity_factor!r}, {a.router.value!r}, "
                        f"{a.activation.value!r}, self.training, inference_capacity_factor={m}.inference_capacity_factor)")

    def op_activation(self, node: Node) -> None:
        if node.kernel is not Kernel.SOLU_LAYER_NORM:
            return super().op_activation(node)
        norm = self.g.consumers(node.outputs[0])[0]
        self.line(norm, f"{self.out(norm)} = norm_kernels.solu_layer_norm({self.ref(node.inputs[0])}, self.{norm.name}.weight, "
                        f"self.{norm.name}.bias, {norm.attrs.eps!r})  # SoLU and its LayerNorm in one kernel")


def emit_triton_model(graph: Graph, spec: ModelSpec, header: dict[str, Any]) -> str:
    return emit_model(graph, spec, header, _KernelScopeEmitter, _defs(), IMPORTS)
