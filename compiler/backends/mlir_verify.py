"""Read a written model.mlir back with torch-mlir's MLIR bindings and count what it holds.

    counts = verify_mlir(path.read_text())   # raises MlirVerifyError when the text is not a valid module
    counts["matmul"], counts["func.func"], counts["ops"]

The counts are by kind of op, over every dialect the backend can write (torch, linalg,
StableHLO, TOSA), so the same model gives the same "matmul" count in each of them.
"""

from __future__ import annotations

from collections import Counter

from ..errors import TaxoncError

# Main kinds of op, by full MLIR op name. "matmul" is every matrix product: linear layers and
# attention's two batched products (QK^T and PV) alike.
KINDS: dict[str, frozenset[str]] = {
    "matmul": frozenset({
        "torch.aten.mm", "torch.aten.bmm", "torch.aten.matmul", "torch.aten.linear", "torch.aten.addmm",
        "torch.aten.baddbmm", "torch.aten.einsum",
        "linalg.matmul", "linalg.batch_matmul", "linalg.matmul_transpose_b", "linalg.batch_matmul_transpose_b",
        "linalg.matvec", "linalg.batch_matvec", "linalg.vecmat",
        "stablehlo.dot_general", "stablehlo.dot",
        "tosa.matmul", "tosa.fully_connected",
    }),
    "attention": frozenset({
        "torch.aten.scaled_dot_product_attention", "torch.aten._scaled_dot_product_flash_attention_for_cpu",
        "torch.aten.flex_attention", "tm_tensor.attention",
    }),
    "gather": frozenset({
        "torch.aten.embedding", "torch.aten.gather", "torch.aten.index.Tensor", "torch.aten.index_select",
        "stablehlo.gather", "stablehlo.torch_index_select", "tosa.gather",
    }),
    "sort": frozenset({"torch.aten.sort", "torch.aten.topk", "torch.aten.argsort", "tm_tensor.sort", "tm_tensor.topk",
                       "stablehlo.sort", "tosa.argmax"}),
    "scatter": frozenset({
        "torch.aten.scatter", "torch.aten.scatter_add", "torch.aten.index_put", "torch.aten.slice_scatter",
        "torch.aten.index_add", "stablehlo.scatter", "tosa.scatter", "tm_tensor.scatter",
    }),
    "reduce": frozenset({
        "torch.aten.sum.dim_IntList", "torch.aten.mean.dim", "torch.aten.amax", "torch.aten.max.dim",
        "linalg.reduce", "stablehlo.reduce",
        "tosa.reduce_sum", "tosa.reduce_max", "tosa.reduce_min", "tosa.reduce_prod", "tosa.reduce_all",
        "tosa.reduce_any",
    }),
    "softmax": frozenset({"torch.aten._softmax", "torch.aten.softmax.int", "linalg.softmax"}),
    "transpose": frozenset({
        "torch.aten.permute", "torch.aten.transpose.int", "torch.aten.t", "linalg.transpose",
        "stablehlo.transpose", "tosa.transpose",
    }),
    "constant": frozenset({
        "torch.vtensor.literal", "arith.constant", "stablehlo.constant", "tosa.const", "ml_program.global",
    }),
    "generic": frozenset({"linalg.generic"}),
}

# ops that carry no computation of their own
_STRUCTURAL = frozenset({"builtin.module", "func.func", "func.return", "linalg.yield", "stablehlo.return",
                         "tosa.yield", "scf.yield", "tm_tensor.yield"})


class MlirVerifyError(TaxoncError):
    """A written model.mlir that does not parse, or has no single public entry point."""


def _context(text: str = ""):
    from torch_mlir import ir
    from torch_mlir.dialects import torch as torch_d

    context = ir.Context()  # the upstream dialects (func, linalg, tosa, arith, ...) come registered
    torch_d.register_dialect(context)
    try:  # StableHLO ships with torch-mlir as its own extension
        from torch_mlir._mlir_libs import _stablehlo

        _stablehlo.register_dialect(context)
    except ImportError:  # pragma: no cover - a torch-mlir build without StableHLO
        pass
    if "tm_tensor." in text:
        # linalg output keeps sort/scatter/top-k as torch-mlir's tm_tensor ops, a dialect the
        # Python bindings cannot register; running the linalg pipeline (on an empty module)
        # loads it into the context
        from torch_mlir.passmanager import PassManager

        with context:
            empty = ir.Module.parse("module {}")
            PassManager.parse("builtin.module(torch-backend-to-linalg-on-tensors-backend-pipeline)").run(empty.operation)
    return context


def parse_module(text: str):
    """Parse MLIR text (elided weights included) into a module; (context, module)."""
    from torch_mlir import ir

    context = _context(text)
    try:
        module = ir.Module.parse(text, context)
    except Exception as exc:  # MLIRError; its text starts with the first diagnostic
        first = next((line.strip() for line in str(exc).splitlines() if "error:" in line), str(exc).splitlines()[0])
        raise MlirVerifyError(f"model.mlir does not parse: {first}") from None
    return context, module


def op_histogram(module) -> Counter[str]:
    """How many ops of each full name (e.g. "linalg.matmul") the module holds, nested ones included."""
    from torch_mlir import ir

    names: Counter[str] = Counter()

    def visit(op):
        names[op.name] += 1
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    return names


def entry_points(module) -> list[str]:
    """Names of the public func.func ops at the top of the module."""
    public = []
    for op in module.body.operations:
        if op.operation.name != "func.func":
            continue
        attrs = op.operation.attributes
        visibility = attrs["sym_visibility"].value if "sym_visibility" in attrs else "public"
        is_declaration = len(op.operation.regions[0].blocks) == 0
        if visibility == "public" and not is_declaration:
            public.append(attrs["sym_name"].value)
    return public


def verify_mlir(text: str) -> dict[str, int]:
    """Parse `text`, check it has exactly one public func.func, and count main op kinds.

    Returns {"func.func": public entry points (always 1), "ops": ops that compute, and one
    count per kind in KINDS ("matmul", "gather", ...)}.
    """
    _context_keepalive, module = parse_module(text)
    entries = entry_points(module)
    if len(entries) != 1:
        raise MlirVerifyError(f"model.mlir has {len(entries)} public func.func entry points "
                              f"({', '.join(entries) or 'none'}); expected exactly one")
    names = op_histogram(module)
    counts = {"func.func": len(entries), "ops": sum(n for name, n in names.items() if name not in _STRUCTURAL)}
    for kind, members in KINDS.items():
        counts[kind] = sum(names[name] for name in members)
    return counts
