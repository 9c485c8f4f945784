"""Export an emitted model to MLIR through torch-mlir's FX importer.

    module = load the emitted model.py; model = module.build(dtype=torch.float32)
    ids, extra = module.example_inputs(batch=1, seq=8)
    text = export_mlir(model, (ids,), extra, dialect="linalg", elide_weights=False)

Dialects: "torch" (torch-mlir's backend contract: aten ops with value semantics), "linalg"
(linalg-on-tensors, what IREE compiles), "stablehlo" and "tosa". Shapes are static, taken from
the example inputs. Weights are inlined as dense resources; with elide_weights they (and every
other constant of more than ELIDE_LIMIT elements) are printed elided, which keeps the file small
and still parses, but cannot be compiled to run.

The export runs torch.export (non-strict) on the model in eval mode under torch.no_grad, on
whatever device its weights are on; on CPU the emitted `attend()` uses explicit masks, which
every dialect lowers, while on a GPU it traces FlexAttention, which torch-mlir cannot lower.
Two repairs happen on the way, so that linalg output runs under IREE like the torch model:
tanh-GELU is decomposed with torch's exact constants (torch-mlir's linalg lowering has
sqrt(2/pi) wrong in the fourth digit), and float64 constants are inlined as dense<...> rather
than dense_resource blobs (IREE's float64 demotion rejects those). For stablehlo, ops whose
lowering is known to exhaust memory are refused up front (_preflight).

Every failure becomes one MlirExportError whose message is one line naming the dialect, the op
that failed and the spec feature behind it (found from the emitted function the op came from).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import logging
import os
import re
import traceback
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from ..errors import TaxoncError, UsageError
from ..spec.kinds import NormKind, PositionKind

DIALECTS = ("torch", "linalg", "stablehlo", "tosa")
OUTPUT_TYPES = {"torch": "torch", "linalg": "linalg-on-tensors", "stablehlo": "stablehlo", "tosa": "tosa"}
ELIDE_LIMIT = 16  # elements (and resource characters) above which --no-weights elides a constant
INSTALL_HINT = "pip install torch-mlir iree-base-compiler iree-base-runtime (or pip install 'taxonc[mlir]')"
_INT64_MAX = 2**63 - 1


class MlirExportError(TaxoncError):
    """A model that torch.export or torch-mlir cannot turn into the requested dialect.

    The message is one line; `dialect`, `op`, `feature` and `detail` hold its parts.
    """

    def __init__(self, dialect: str, op: str, feature: str, detail: str):
        self.dialect, self.op, self.feature, self.detail = dialect, op, feature, detail
        where = f"{op}: {detail}" if op else detail
        super().__init__(_one_line(f"MLIR export to {dialect} failed: {where}"
                                   + (f" [spec feature: {feature}]" if feature else "")))

    def for_dialect(self, dialect: str) -> "MlirExportError":
        """The same failure, reported for another dialect (a torch.export failure stops them all)."""
        return self if dialect == self.dialect else MlirExportError(dialect, self.op, self.feature, self.detail)

    @property
    def reason(self) -> str:
        """The message without its dialect: the same for every dialect a failure stops."""
        return str(self).split(" failed: ", 1)[-1]


class MlirUnavailableError(TaxoncError):
    """torch-mlir is not installed."""


# --------------------------------------------------------------------------------------------
# what failed, in spec terms
# --------------------------------------------------------------------------------------------

# Emitted functions (prelude definitions and emitted classes) -> the spec feature they implement.
# Searched from the innermost frame of the failing op outwards; the first hit names the feature.
FUNCTION_FEATURES: dict[str, str] = {
    "MoE": "[moe] mixture of experts (token dispatch to experts)",
    "attend_relative_xl": 'position.kind = "relative-xl" (Transformer-XL relative attention)',
    "relative_buckets": 'position.kind = "relative-bias" (T5 bucketed relative biases)',
    "alibi_slopes": f'position.kind = "{PositionKind.ALIBI}"',
    "allowed_keys": "attention mask (attention.sparse, or structure = \"prefix-lm\")",
    "rotary_tables": 'position.kind = "rotary"',
    "apply_rotary": 'position.kind = "rotary"',
    "rotary_flat": 'position.kind = "rotary"',
    "pairs_to_halves": 'position.pairing = "interleaved"',
    "halves_to_pairs": 'position.pairing = "interleaved"',
    "chunked_cross_attention": '[cross_attention] kind = "chunked" (RETRO chunked cross-attention)',
    "encode_neighbours": '[cross_attention] kind = "chunked" (RETRO neighbour encoder)',
    "NeighbourEncoder": '[cross_attention] kind = "chunked" (RETRO neighbour encoder)',
    "PerceiverResampler": '[cross_attention] kind = "gated" (Flamingo perceiver resampler)',
    "TanhGate": '[cross_attention] kind = "gated" (Flamingo tanh gate)',
    "rms_norm": f'norm.kind = "{NormKind.RMSNORM}"',
    "glu": "mlp.activation (gated: swiglu / geglu / geglu-tanh)",
    "activate": "mlp.activation",
    "attend": "attention masks and score biases (attend)",
    "Embed": "token/position embedding",
}
# sinusoidal_table serves two features; its caller tells which
_SINUSOID_XL = 'sinusoidal position table of position.kind = "relative-xl"'
_SINUSOID_ABS = 'position.kind = "sinusoidal"'

# FlexAttention: attend() takes it on a GPU for every mask other than plain causal/full and for
# ALiBi and relative-bias scores; its block mask (a sort) and score_mod have no torch-mlir lowering
_FLEX_OPS = ("flex_attention", "sort")
_FLEX_FEATURE = ("FlexAttention in attend() (traced on a GPU: attention.sparse, prefix-lm masks, "
                 f'position.kind = "{PositionKind.ALIBI}" or "{PositionKind.RELATIVE_BIAS}")')

# Op names (as torch.export or MLIR diagnostics spell them) -> feature, when no emitted frame
# points at one.
OP_FEATURES: dict[str, str] = {
    "flex_attention": "FlexAttention (masked or biased attention traced on a GPU: sparse/prefix masks, ALiBi, relative-bias)",
    "bincount": "[moe] mixture of experts (token dispatch to experts)",
    "index_add": "[moe] mixture of experts (token dispatch to experts)",
    "argsort": "[moe] mixture of experts (token dispatch to experts)",
    "topk": "[moe] mixture of experts (router top-k)",
    "sort": "FlexAttention block mask (masked or biased attention traced on a GPU)",
    "slice_scatter": "strided slice assignment (sinusoidal position table)",
    "gather": 'position.kind = "relative-xl" (gather by distance)',
    "index.Tensor": 'position.kind = "relative-bias" (bucket table lookup)',
    "scaled_dot_product": "attention",
    "embedding": "token/position embedding",
}


@dataclass
class _Frames:
    """Where in the emitted source an op came from: qualified function names, innermost first."""

    names: list[str]

    def feature(self, op: str = "") -> str:
        if any(key in op for key in _FLEX_OPS) and any(n.split(".")[-1] == "attend" for n in self.names):
            return _FLEX_FEATURE
        for i, name in enumerate(self.names):
            base = name.split(".")[0]
            if base == "sinusoidal_table":
                return _SINUSOID_XL if "attention_core" in self.names[i + 1:] else _SINUSOID_ABS
            if base in FUNCTION_FEATURES:
                return FUNCTION_FEATURES[base]
            short = name.split(".")[-1]
            if short in FUNCTION_FEATURES:
                return FUNCTION_FEATURES[short]
        return _op_feature(op)

    def where(self) -> str:
        return self.names[0] if self.names else ""


def _op_feature(op: str) -> str:
    for key, feature in OP_FEATURES.items():
        if key in op:
            return feature
    return ""


def _functions_of(path: str) -> tuple[tuple[int, int, str], ...]:
    """(first line, last line, qualified name) of every function and method in a source file."""
    try:
        stamp = os.stat(path)
    except OSError:
        return ()
    return _functions_of_version(path, stamp.st_mtime_ns, stamp.st_size)


@lru_cache(maxsize=32)
def _functions_of_version(path: str, mtime_ns: int, size: int) -> tuple[tuple[int, int, str], ...]:
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ()
    out: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    out.append((child.lineno, child.end_lineno or child.lineno, name))
                visit(child, name + ".")

    visit(tree, "")
    return tuple(out)


def _function_at(path: str, line: int) -> str:
    best = None
    for first, last, name in _functions_of(path):
        if first <= line <= last and (best is None or first >= best[0]):
            best = (first, name)
    return best[1] if best else ""


def _frames_from_locations(text: str, source: str | None) -> _Frames:
    """Emitted-source frames from an MLIR location: loc(callsite("model.py":12:0 at ...))."""
    names: list[str] = []
    for path, line in re.findall(r'"([^"]+)":(\d+):\d+', text):
        if source is not None and path != source:
            continue
        name = _function_at(path, int(line))
        if name and (not names or names[-1] != name):
            names.append(name)
    return _Frames(names)


def _frames_from_traceback(error: BaseException, source: str | None) -> _Frames:
    names: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if source is not None and frame.filename == source:
                name = _function_at(frame.filename, frame.lineno or 0) or frame.name
                if not names or names[-1] != name:
                    names.append(name)
        exc = exc.__cause__ or exc.__context__
    if not names:  # torch.export names the failing user line in its message instead
        for path, line in re.findall(r'File "([^"]+)", line (\d+)', str(error)):
            if source is None or path == source:
                names.append(_function_at(path, int(line)))
    return _Frames([n for n in names if n])


def _one_line(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_source(model: torch.nn.Module) -> str | None:
    """The file the emitted model was loaded from (imported as a module or not)."""
    code = getattr(getattr(type(model), "forward", None), "__code__", None)
    return code.co_filename if code is not None and not code.co_filename.startswith("<") else None


# --------------------------------------------------------------------------------------------
# torch.export failures
# --------------------------------------------------------------------------------------------

def _explain_export_failure(exc: Exception, dialect: str, source: str | None) -> MlirExportError:
    message = str(exc)
    frames = _frames_from_traceback(exc, source)
    # torch.export quotes the user line that raised ("The following call raised this error: File ..., line N")
    quoted = re.search(r'raised this error:\s*File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)', message)
    code = quoted.group(3).strip() if quoted else ""
    if quoted and not frames.names:
        frames = _Frames([_function_at(quoted.group(1), int(quoted.group(2)))])
    ops = re.findall(r"torch\.(\w+)|\.(tolist|item|nonzero)\(", code)
    op = next((a or b for a, b in ops), "") if ops else ""
    if "data-dependent" in message or "GuardOnDataDependent" in type(exc).__name__:
        reason = "a shape depends on tensor values, and torch.export needs static shapes"
    elif "Unsupported" in type(exc).__name__ or "Unsupported" in message[:200]:
        reason = "torch.export does not support this Python construct"
    else:
        first = next((line for line in message.splitlines() if line.strip()), type(exc).__name__)
        reason = f"torch.export failed ({type(exc).__name__}: {first.strip()})"
    where = f" at `{code}`" if code else ""
    where += f" in {frames.where()}" if frames.where() else ""
    return MlirExportError(dialect, f"aten.{op}" if op and not op.startswith(("tolist", "item")) else op,
                           frames.feature(op), reason + where)


# --------------------------------------------------------------------------------------------
# torch-mlir failures
# --------------------------------------------------------------------------------------------

class _Diagnostics:
    """Collects the MLIR error diagnostics of one context (instead of printing them to stderr)."""

    def __init__(self, context):
        self.errors: list[tuple[str, str]] = []  # (message, location)
        self._handle = context.attach_diagnostic_handler(self._on)

    def _on(self, diagnostic) -> bool:
        from torch_mlir import ir

        if diagnostic.severity == ir.DiagnosticSeverity.ERROR:
            self.errors.append((str(diagnostic.message), str(diagnostic.location)))
        return True

    def detach(self) -> None:
        self._handle.detach()


_FAILED_OP = re.compile(r"failed to legalize operation '([\w.]+)'|'([\w.]+)' op |name = \"([\w.]+)\"")


def _failed_op(message: str) -> str:
    named = re.search(r'name = "([\w.]+)"', message)  # torch.operator wraps ops torch-mlir does not know
    if named:
        return named.group(1)
    m = _FAILED_OP.search(message)
    return next((g for g in m.groups() if g), "") if m else ""


def _explain_mlir_failure(exc: Exception, diags: _Diagnostics, dialect: str, stage: str,
                          source: str | None) -> MlirExportError:
    message = str(exc)
    for text, location in diags.errors:
        op = _failed_op(text)
        if not op:
            continue
        frames = _frames_from_locations(location, source)
        op_short = op.removeprefix("torch.")
        if "legalize" in text or "torch.operator" in text:
            reason = f"has no {dialect} lowering in torch-mlir" if stage != "torch" else \
                "is not supported by torch-mlir's torch backend pipeline"
        else:
            reason = _one_line(text, 160)
        where = f" (from {frames.where()})" if frames.where() else ""
        return MlirExportError(dialect, op_short, frames.feature(op_short), reason + where)
    if "bad_alloc" in message:
        return MlirExportError(dialect, "", "", f"torch-mlir's {dialect} lowering ran out of memory (std::bad_alloc)")
    first = diags.errors[0][0] if diags.errors else next(
        (line for line in message.splitlines() if "exception" in line), message.splitlines()[0] if message else "")
    return MlirExportError(dialect, "", "", f"torch-mlir failed during {stage}: {_one_line(first, 200)}")


def _constant_int(value) -> int | None:
    owner = value.owner
    op = getattr(owner, "operation", owner)
    if getattr(op, "name", "") == "torch.constant.int" and "value" in op.attributes:
        return int(op.attributes["value"].value)
    return None


def _preflight(module, dialect: str, source: str | None) -> None:
    """Refuse ops whose lowering is known to misbehave instead of failing cleanly.

    torch-mlir's StableHLO lowering of aten.slice_scatter does not clamp an open slice end
    (INT64_MAX, from `t[:, a:] = ...` or `t[:, 0::2] = ...`) to the dimension and tries to
    allocate ~32 GiB: std::bad_alloc at best, the OOM killer at worst.
    """
    if dialect != "stablehlo":
        return
    from torch_mlir import ir

    found: list[Any] = []

    def visit(op):
        if op.name == "torch.aten.slice_scatter" and len(op.operands) >= 5:
            end = _constant_int(op.operands[4])
            if end is not None and end >= _INT64_MAX:
                found.append(op)
                return ir.WalkResult.INTERRUPT
        return ir.WalkResult.ADVANCE

    module.operation.walk(visit)
    if found:
        frames = _frames_from_locations(str(found[0].location), source)
        where = f" (from {frames.where()})" if frames.where() else ""
        raise MlirExportError(dialect, "aten.slice_scatter", frames.feature("slice_scatter"),
                              "an open-ended slice assignment (t[:, a:] = ..., t[:, 0::2] = ...) makes torch-mlir's "
                              f"StableHLO lowering allocate ~32 GiB{where}")


# --------------------------------------------------------------------------------------------
# the export
# --------------------------------------------------------------------------------------------

def _decompositions(table: dict) -> dict:
    """torch-mlir's decompositions, plus torch's own for aten.gelu.

    torch-mlir lowers aten.gelu(approximate="tanh") to linalg with sqrt(2/pi) written as
    0.797724 (it is 0.7978846): every tanh-GELU is off by up to ~2e-4 relative, and whole tiny
    models by ~5e-5 under IREE. torch's reference decomposition spells the formula out with
    exact constants, in ops every dialect lowers.
    """
    from torch._decomp import decomposition_table as torch_decompositions

    gelu = torch.ops.aten.gelu.default
    if gelu in torch_decompositions:
        table = dict(table)
        table[gelu] = torch_decompositions[gelu]
    return table


def _importer(FxImporter, context):
    """torch-mlir's FX importer, with float64 constants inlined as dense<...> elements.

    The importer stores every multi-element constant as a dense_resource blob. IREE demotes
    float64 to float32 and rewrites dense<...> constants, but rejects a float64 dense_resource
    ("'arith.constant' op failed to verify that all of {value, result} have same type"): the
    ALiBi slopes, which alibi_slopes() builds in float64. Inline them instead.
    """
    import numpy as np
    from torch_mlir import ir
    from torch_mlir.extras.fx_importer import FxImporterHooks

    class InlineFloat64(FxImporterHooks):
        def resolve_literal(self, gni, literal, info):
            if not (isinstance(literal, torch.Tensor) and literal.dtype == torch.float64
                    and 1 < literal.numel() <= 65536):
                return None
            array = np.array(literal.detach().cpu().tolist(), dtype=np.float64).reshape(tuple(literal.shape))
            vtensor = ir.Type.parse(f"!torch.vtensor<{list(literal.shape)},f64>")
            return ir.Operation.create("torch.vtensor.literal", results=[vtensor],
                                       attributes={"value": ir.DenseElementsAttr.get(array)}).result

    return FxImporter(context=context, hooks=InlineFloat64())


def _torch_mlir():
    try:
        from torch_mlir import fx, ir
        from torch_mlir.compiler_utils import OutputType, lower_mlir_module
        from torch_mlir.dialects import torch as torch_d
        from torch_mlir.extras.fx_decomp_util import get_decomposition_table
        from torch_mlir.extras.fx_importer import FxImporter
    except ImportError:
        raise MlirUnavailableError(f"the MLIR backend needs torch-mlir: {INSTALL_HINT}") from None
    return fx, ir, OutputType, lower_mlir_module, torch_d, get_decomposition_table, FxImporter


@contextlib.contextmanager
def _trace_helpers(model: torch.nn.Module, source: str | None):
    """Let torch.export record frames of the emitted helper functions (attend, sinusoidal_table,
    ...) in each node's stack trace, not only the frames of module forwards, so that a failing op
    can be traced to the prelude function, and so to the spec feature, that made it."""
    try:
        from torch.fx import proxy
        anchors = proxy._STACK_TRACE_ANCHORS  # private (torch >= 2.10); without it: forward frames only
    except (ImportError, AttributeError):
        yield
        return
    added: set[tuple[str, str]] = set()
    forward = getattr(type(model), "forward", None)
    namespace = getattr(forward, "__globals__", {})  # the emitted module's globals, imported or not
    if source is not None:
        for value in list(namespace.values()):
            functions = [value] if inspect.isfunction(value) else \
                [v for v in vars(value).values() if inspect.isfunction(v)] if inspect.isclass(value) else []
            for fn in functions:
                key = (fn.__code__.co_filename, fn.__code__.co_name)
                if key[0] == source and key not in anchors:
                    added.add(key)
    anchors.update(added)
    try:
        yield
    finally:
        anchors.difference_update(added)


@contextlib.contextmanager
def _quiet():
    """Keep torch.export's warnings and its graph dumps on data-dependent failures off stderr:
    a failure is reported once, as the MlirExportError."""
    loggers = [logging.getLogger(name) for name in ("torch.fx.experimental.symbolic_shapes", "torch._dynamo",
                                                     "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        # torch.export prints the partial graph of a failed export to sys.stderr itself
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def export_mlir(model: torch.nn.Module, example_args: tuple | list, example_kwargs: dict[str, Any] | None = None,
                dialect: str = "torch", elide_weights: bool = False) -> str:
    """MLIR text of `model` called on the example inputs, in one of DIALECTS; MlirExportError if
    it cannot be exported."""
    result = export_mlir_many(model, example_args, example_kwargs, (dialect,), elide_weights)[dialect]
    if isinstance(result, MlirExportError):
        raise result
    return result


def export_mlir_many(model: torch.nn.Module, example_args: tuple | list, example_kwargs: dict[str, Any] | None = None,
                     dialects: tuple[str, ...] | list[str] = DIALECTS,
                     elide_weights: bool = False) -> dict[str, str | MlirExportError]:
    """Export once (torch.export and import to the torch dialect), then lower a copy to each
    dialect: {dialect: MLIR text, or the MlirExportError of that dialect}."""
    unknown = [d for d in dialects if d not in OUTPUT_TYPES]
    if unknown:
        raise UsageError(f"unknown MLIR dialect {unknown[0]!r}; dialects are: {', '.join(DIALECTS)}")
    fx, ir, OutputType, lower_mlir_module, torch_d, get_decomposition_table, FxImporter = _torch_mlir()
    source = _model_source(model)
    args, kwargs = tuple(example_args), dict(example_kwargs or {})

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _quiet(), _trace_helpers(model, source):
            try:
                program = torch.export.export(model, args, kwargs, strict=False)
                program = program.run_decompositions(_decompositions(get_decomposition_table()))
            except Exception as exc:  # noqa: BLE001 - torch.export raises many unrelated types
                failure = _explain_export_failure(exc, dialects[0], source)
                return {d: failure.for_dialect(d) for d in dialects}
    finally:
        model.train(was_training)

    context = ir.Context()
    torch_d.register_dialect(context)
    diags = _Diagnostics(context)
    try:
        try:
            module = fx.export_and_import(program, output_type="torch", decomposition_table={},
                                          fx_importer=_importer(FxImporter, context))
        except Exception as exc:  # noqa: BLE001 - TorchMlirCompilerError, MLIRError, RuntimeError
            failure = _explain_mlir_failure(exc, diags, dialects[0], "torch", source)
            return {d: failure.for_dialect(d) for d in dialects}
        out: dict[str, str | MlirExportError] = {}
        for dialect in dialects:
            diags.errors.clear()
            try:
                _preflight(module, dialect, source)
                lowered = module
                if dialect != "torch":
                    lowered = module.operation.clone()  # lowering works in place; keep the torch module
                    lower_mlir_module(False, OutputType.get(OUTPUT_TYPES[dialect]), lowered)
            except MlirExportError as exc:
                out[dialect] = exc
                continue
            except Exception as exc:  # noqa: BLE001 - TorchMlirCompilerError, MLIRError, RuntimeError
                out[dialect] = _explain_mlir_failure(exc, diags, dialect, dialect, source)
                continue
            op = lowered.operation
            out[dialect] = op.get_asm(large_elements_limit=ELIDE_LIMIT, large_resource_limit=ELIDE_LIMIT) \
                if elide_weights else op.get_asm()
        return out
    finally:
        diags.detach()


def export_model_source(source: str, dialect: str = "torch", batch: int = 1, seq_len: int | None = None,
                        elide_weights: bool = False, seed: int = 0) -> str:
    """Export an emitted model.py (its source text, e.g. Compiled.files["model.py"]) to MLIR.

    The model is built on the CPU in float32 with torch.manual_seed(seed) and traced on
    example_inputs(batch, seq_len) (seq_len defaults to min(16, context)); what `taxonc compile
    --backend mlir` writes to DIR/model.mlir.
    """
    import sys

    from taxonc.runtime.artifact import load_source

    if batch < 1 or (seq_len is not None and seq_len < 1):
        raise UsageError("--batch and --seq-len must be at least 1")
    module = load_source(source, "mlir_model")  # a real file: locations and tracebacks point into it
    try:
        context = module.CONFIG.context
        seq = min(16, context) if seq_len is None else seq_len
        if seq > context:
            raise UsageError(f"--seq-len {seq} is longer than the model's context ({context})")
        torch.manual_seed(seed)
        model = module.build(device="cpu", dtype=torch.float32)
        ids, extra = module.example_inputs(batch=batch, seq=seq, dtype=torch.float32)
        return export_mlir(model, (ids,), extra, dialect, elide_weights)
    finally:
        sys.modules.pop(module.__name__, None)
