"""Compile linalg-on-tensors MLIR with IREE for the CPU and run it.

    module = IreeModule.compile(text)          # or compile_linalg(text) -> bytes (a .vmfb)
    logits = module.run(input_ids, **extra)     # torch tensors or numpy arrays in, torch tensor out

The module must carry its weights (written without --no-weights): elided constants have no data.
Inputs go in the order of the exported function: positional ones first, then keyword ones in the
order they were given to export_mlir (emitted models' example_inputs() keep that order).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import TaxoncError


class IreeError(TaxoncError):
    """IREE could not compile or run a module."""


def _iree():
    try:
        import iree.compiler as compiler
        import iree.runtime as runtime
    except ImportError:
        raise IreeError("running MLIR needs IREE: pip install iree-base-compiler iree-base-runtime "
                        "(or pip install 'taxonc[mlir]')") from None
    return compiler, runtime


def compile_linalg(text: str, target_cpu: str = "host") -> bytes:
    """linalg-on-tensors MLIR text -> an IREE VM flatbuffer for the llvm-cpu backend.

    IREE demotes float64 to float32 (its llvm-cpu backend has no float64 sin/cos), so position
    tables that emitted models build in float64 are computed in float32 here.
    """
    compiler, _ = _iree()
    if "dense_resource<__elided__>" in text or _has_elided_resources(text):
        raise IreeError("this model.mlir was written with --no-weights; IREE needs the weights inlined")
    try:
        return compiler.compile_str(text, target_backends=["llvm-cpu"], input_type="auto",
                                    extra_args=[f"--iree-llvmcpu-target-cpu={target_cpu}"])
    except compiler.CompilerToolError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if "error:" in line), "see the IREE diagnostics")
        raise IreeError(f"IREE could not compile the module: {first}") from None


def _has_elided_resources(text: str) -> bool:
    # an elided module keeps its dense_resource<...> references but prints an empty resource table
    tail = text[-4096:]
    return "dense_resource<" in text and "{-#" in tail and "dialect_resources" not in tail


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)


class IreeModule:
    """One compiled module loaded into a CPU (local-task) IREE context."""

    def __init__(self, vmfb: bytes, function: str = "main"):
        _, runtime = _iree()
        self._context = runtime.SystemContext(config=runtime.Config("local-task"))
        self._context.add_vm_module(runtime.VmModule.copy_buffer(self._context.instance, vmfb))
        # torch-mlir's modules have no name, which IREE calls "module"
        self._function = self._context.modules.module[function]

    @classmethod
    def compile(cls, text: str, function: str = "main") -> "IreeModule":
        return cls(compile_linalg(text), function)

    def run(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = [_to_numpy(a) for a in args] + [_to_numpy(v) for v in kwargs.values()]
        try:
            result = self._function(*inputs)
        except Exception as exc:  # RuntimeError from the VM: wrong shape or dtype of an input
            raise IreeError(f"IREE could not run the module: {str(exc).splitlines()[0]}") from None
        if isinstance(result, (tuple, list)):
            result = result[0]
        return torch.from_numpy(np.array(result.to_host() if hasattr(result, "to_host") else result))


def run_linalg(text: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Compile linalg-on-tensors MLIR with IREE (llvm-cpu), run it once and return the logits."""
    return IreeModule.compile(text).run(*args, **kwargs)
