"""Imports go one way: the layering table of design.md (the shared architecture document) ("Packages and layering").

Every Python file of the three top-level packages is parsed with `ast`; every import is read,
wherever it sits (module level, inside a function, under `if TYPE_CHECKING:`), whether it is
`import x` or `from x import y`, and relative imports are resolved against the file's own
package. The folder-to-package mapping comes from pyproject.toml ([tool.setuptools.package-dir]):
taxonc.compiler = compiler/, taxonc.runtime = runtime/, taxonc.kernels = kernels/ and
taxonc.testing = compiler/testing/.

The table, as amended for the reference-ops work (design.md's table plus the amendments):

| files                                   | may import (besides stdlib and third-party packages)        |
|-----------------------------------------|-------------------------------------------------------------|
| compiler/spec                           | compiler/errors                                             |
| compiler/ir                             | spec, errors, taxonc.kernels.reference (not analysis)       |
| compiler/analysis                       | spec, ir, errors                                            |
| compiler/passes                         | ir, spec, errors                                            |
| compiler/backends                       | passes, ir, spec, analysis, errors, taxonc.runtime (loading |
|                                         | an emitted module to export it), taxonc.kernels             |
| drivers (cli.py, compile.py, running.py | anything in taxonc                                          |
|   and every other top-level compiler    |                                                             |
|   module)                               |                                                             |
| compiler/errors.py, compiler/__init__.py| nothing from taxonc (every stage may import them)           |
| taxonc.runtime (runtime/)               | taxonc.kernels, never taxonc.compiler                       |
| taxonc.kernels (kernels/)               | itself only; third-party limited to torch, triton, numpy    |
| taxonc.kernels.reference                | itself only; third-party limited to torch ("torch-only")    |
| taxonc.testing (compiler/testing/)      | taxonc.compiler, taxonc.runtime (a public toolkit on top)   |
| emitted torch code (tests/golden/*/     | torch and stdlib only, never taxonc                         |
|   model.py)                             |                                                             |
| emitted Triton code                     | torch, stdlib, triton, taxonc.runtime, taxonc.kernels;      |
|                                         |   never taxonc.compiler                                     |

Every package may import itself, and each compiler stage may import the bare package root
`taxonc.compiler` (compiler/__init__.py, which holds only the version). A violation names the
rule and file:line. test_every_file_falls_under_exactly_one_rule makes a new folder amend this
table instead of escaping it.
"""

from __future__ import annotations

import ast
import functools
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = frozenset(sys.stdlib_module_names)


def package_dirs(root: Path = ROOT) -> dict[str, str]:
    """{"taxonc.compiler": "compiler", ...} from pyproject's [tool.setuptools.package-dir]."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {package: folder.rstrip("/") for package, folder in mapping.items()}


PACKAGE_DIRS = package_dirs()


def module_name(relpath: str) -> str | None:
    """compiler/ir/interpret.py -> taxonc.compiler.ir.interpret; a package's __init__.py names the package.

    The longest folder wins, so compiler/testing/plugin.py is taxonc.testing.plugin.
    """
    parts = Path(relpath).with_suffix("").parts
    best: tuple[int, str] | None = None
    for package, folder in PACKAGE_DIRS.items():
        prefix = Path(folder).parts
        if parts[: len(prefix)] == prefix and (best is None or len(prefix) > best[0]):
            best = (len(prefix), package)
    if best is None:
        return None
    rest = list(parts[best[0]:])
    if rest and rest[-1] == "__init__":
        rest.pop()
    return ".".join([best[1], *rest])


def source_files(root: Path = ROOT) -> list[str]:
    """Every .py file under the mapped folders, as paths relative to `root`."""
    found: set[str] = set()
    for folder in PACKAGE_DIRS.values():
        base = root / folder
        if base.is_dir():
            found |= {p.relative_to(root).as_posix() for p in base.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(found)


def known_modules(root: Path = ROOT) -> frozenset[str]:
    return frozenset(filter(None, (module_name(f) for f in source_files(root))))


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    module: str  # absolute, relative imports resolved
    statement: str  # the source text, for messages

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _resolve_relative(package: str, level: int, module: str | None) -> str:
    parts = package.split(".")
    if level - 1 > len(parts) - 1:
        raise ValueError(f"relative import beyond the top-level package from {package}")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(source: str, relpath: str, modules: Iterable[str] | None = None) -> list[Import]:
    """All imports in `source` (a file at `relpath`), at any depth, with absolute module names.

    `from pkg import name` counts as importing pkg.name when that is a module in the tree
    (`from . import prelude`), else as importing pkg.
    """
    return list(_imports(source, relpath, frozenset(modules) if modules is not None else KNOWN))


@functools.lru_cache(maxsize=None)
def _imports(source: str, relpath: str, known: frozenset[str]) -> tuple[Import, ...]:
    me = module_name(relpath) or Path(relpath).stem
    package = me if Path(relpath).name == "__init__.py" else me.rpartition(".")[0]
    lines = source.splitlines()
    found: list[Import] = []
    for node in ast.walk(ast.parse(source, filename=relpath)):
        text = lines[node.lineno - 1].strip() if isinstance(node, (ast.Import, ast.ImportFrom)) else ""
        if isinstance(node, ast.Import):
            found += [Import(relpath, node.lineno, alias.name, text) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(package, node.level, node.module) if node.level else node.module or ""
            targets = {f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names}
            found += [Import(relpath, node.lineno, t, text) for t in sorted(targets)]
    return tuple(sorted(found, key=lambda i: (i.line, i.module)))


KNOWN = known_modules()


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


@dataclass(frozen=True)
class Rule:
    """Files matching `files` may import the taxonc modules under `allowed`; `third_party`, when
    given, limits the non-stdlib, non-taxonc imports to those top-level names."""

    name: str
    says: str  # the rule in words, as a violation message quotes it
    files: tuple[str, ...]  # folders or files, relative to the repository root
    allowed: tuple[str, ...]
    third_party: frozenset[str] | None = None
    exactly: tuple[str, ...] = ()  # modules allowed themselves, not their submodules
    except_files: tuple[str, ...] = ()  # covered by a more specific rule

    def covers(self, relpath: str) -> bool:
        def under(path: str, entries: tuple[str, ...]) -> bool:
            return any(path == e or path.startswith(e.rstrip("/") + "/") for e in entries)

        return under(relpath, self.files) and not under(relpath, self.except_files)

    def problems(self, imp: Import) -> str | None:
        if imp.top == "taxonc":
            if imp.module in self.exactly or any(within(imp.module, a) for a in self.allowed):
                return None
            return f"imports {imp.module}"
        if self.third_party is not None and imp.top not in STDLIB and imp.top not in self.third_party:
            return f"imports the third-party package {imp.top}"
        return None

    def violations(self, files: Iterable[tuple[str, str]], modules: Iterable[str] | None = None) -> list[str]:
        """Messages for every import breaking this rule in (relpath, source) pairs."""
        out = []
        for relpath, source in files:
            if not self.covers(relpath):
                continue
            for imp in imports_of(source, relpath, modules):
                why = self.problems(imp)
                if why:
                    out.append(f"[{self.name}] {imp.where()}: `{imp.statement}` {why}; rule: {self.says} "
                               f"(design.md, Packages and layering)")
        return out


C = "taxonc.compiler"
# compiler/__init__.py holds the version string only (the leaf rule checks it); importing the
# bare package root is allowed to every stage, its submodules are not
ROOT_PKG = (C,)
SPEC, IR, ANALYSIS, PASSES, BACKENDS, ERRORS = (f"{C}.{s}" for s in ("spec", "ir", "analysis", "passes", "backends", "errors"))
REFERENCE = "taxonc.kernels.reference"
STAGES = ("compiler/spec", "compiler/ir", "compiler/analysis", "compiler/passes", "compiler/backends", "compiler/testing")
LEAVES = ("compiler/errors.py", "compiler/__init__.py")

RULES = [
    Rule("spec", "compiler/spec may import only compiler/errors",
         ("compiler/spec",), (SPEC, ERRORS), exactly=ROOT_PKG),
    Rule("ir", "compiler/ir may import spec, errors and the torch reference ops taxonc.kernels.reference (not analysis)",
         ("compiler/ir",), (IR, SPEC, ERRORS, REFERENCE), exactly=ROOT_PKG),
    Rule("analysis", "compiler/analysis may import spec, ir, errors",
         ("compiler/analysis",), (ANALYSIS, SPEC, IR, ERRORS), exactly=ROOT_PKG),
    Rule("passes", "compiler/passes may import ir, spec, errors",
         ("compiler/passes",), (PASSES, IR, SPEC, ERRORS), exactly=ROOT_PKG),
    Rule("backends", "compiler/backends may import passes, ir, spec, analysis, errors, taxonc.runtime and taxonc.kernels",
         ("compiler/backends",), (BACKENDS, PASSES, IR, SPEC, ANALYSIS, ERRORS, "taxonc.runtime", "taxonc.kernels"),
         exactly=ROOT_PKG),
    Rule("drivers", "the drivers (cli.py, compile.py, running.py, the other top-level compiler modules) may import anything in taxonc",
         ("compiler",), ("taxonc",), except_files=STAGES + LEAVES),
    Rule("leaves", "compiler/errors.py and compiler/__init__.py import nothing from taxonc",
         LEAVES, ()),
    Rule("runtime", "taxonc.runtime may import taxonc.kernels, never taxonc.compiler",
         ("runtime",), ("taxonc.runtime", "taxonc.kernels")),
    Rule("kernels", "taxonc.kernels may import torch, triton, numpy, the stdlib and itself only",
         ("kernels",), ("taxonc.kernels",), frozenset({"torch", "triton", "numpy"})),
    Rule("kernels.reference", "taxonc.kernels.reference is torch-only: torch, the stdlib and itself",
         ("kernels/reference", "kernels/reference.py"), (REFERENCE,), frozenset({"torch"})),
    Rule("testing", "taxonc.testing (compiler/testing) may import taxonc.compiler and taxonc.runtime",
         ("compiler/testing",), ("taxonc.testing", C, "taxonc.runtime")),
]
EMITTED_TORCH = Rule("emitted-torch", "the torch backend's emitted model.py imports torch and the stdlib only, never taxonc",
                     ("tests/golden",), (), frozenset({"torch"}))
EMITTED_TRITON = Rule("emitted-triton", "the Triton backend's emitted model.py may import taxonc.runtime and taxonc.kernels, never taxonc.compiler",
                      ("<emitted>",), ("taxonc.runtime", "taxonc.kernels"), frozenset({"torch", "triton"}))


def _tree(root: Path = ROOT) -> list[tuple[str, str]]:
    return [(f, (root / f).read_text(encoding="utf-8")) for f in source_files(root)]


@pytest.fixture(scope="module")
def tree() -> list[tuple[str, str]]:
    return _tree()


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_layering_rule(rule: Rule, tree) -> None:
    assert any(rule.covers(f) for f, _ in tree) or rule.name == "kernels.reference", f"rule {rule.name} covers no file"
    problems = rule.violations(tree)
    assert not problems, "\n".join(problems)


def test_emitted_torch_code_imports_torch_and_the_stdlib_only() -> None:
    golden = sorted((ROOT / "tests" / "golden").glob("*/model.py"))
    assert golden
    files = [(p.relative_to(ROOT).as_posix(), p.read_text(encoding="utf-8")) for p in golden]
    problems = EMITTED_TORCH.violations(files)
    assert not problems, "\n".join(problems)


def test_emitted_triton_code_never_imports_the_compiler() -> None:
    from taxonc.compiler.compile import compile_spec

    source = compile_spec(ROOT / "specs" / "llama.toml", scale="tiny", backend="triton").files["model.py"]
    imports = imports_of(source, "<emitted>/model.py")
    assert any(within(i.module, "taxonc.kernels") for i in imports)  # the check below is not vacuous
    problems = EMITTED_TRITON.violations([("<emitted>/model.py", source)])
    assert not problems, "\n".join(problems)


def test_every_file_falls_under_exactly_one_rule(tree) -> None:
    for relpath, _ in tree:
        rules = [r.name for r in RULES if r.covers(relpath)]
        if relpath.startswith("kernels/reference"):  # both kernels rules apply: reference is the stricter one
            rules = [r for r in rules if r != "kernels"]
        assert len(rules) == 1, f"{relpath} falls under {rules or 'no rule'}; amend the table in tests/test_layering.py"


def test_every_taxonc_import_names_a_module_in_the_tree(tree) -> None:
    """A stale path (taxonc.compiler.testing, a moved module) would otherwise dodge every rule."""
    missing = []
    for relpath, source in tree:
        for imp in imports_of(source, relpath):
            if imp.top == "taxonc" and imp.module not in KNOWN and imp.module not in {"taxonc"}:
                missing.append(f"{imp.where()}: `{imp.statement}` names {imp.module}, which no file in the tree provides")
    assert not missing, "\n".join(missing)


# The checker itself, on modules that do not exist.

def _only(rule_name: str) -> Rule:
    return next(r for r in RULES if r.name == rule_name)


def test_checker_reports_a_relative_import_with_rule_and_line() -> None:
    source = '"""fake"""\n\nfrom ..backends.torch_src import emit\nfrom ..spec.model import ModelSpec\n'
    problems = _only("ir").violations([("compiler/ir/fake.py", source)])
    assert len(problems) == 1, problems
    assert problems[0].startswith("[ir] compiler/ir/fake.py:3: `from ..backends.torch_src import emit` "
                                  "imports taxonc.compiler.backends.torch_src.emit")
    assert "compiler/ir may import" in problems[0]


def test_checker_reports_a_function_level_import_with_rule_and_line() -> None:
    source = "import math\n\n\ndef late():\n    if math.pi:\n        from ..analysis import count_params\n    return count_params\n"
    problems = _only("ir").violations([("compiler/ir/fake.py", source)])
    assert len(problems) == 1 and problems[0].startswith("[ir] compiler/ir/fake.py:6: ")
    assert "taxonc.compiler.analysis" in problems[0]
    source = "def late():\n    import taxonc.runtime.tokenizer as tok\n    return tok\n"
    problems = _only("spec").violations([("compiler/spec/fake.py", source)])
    assert problems == [f"[spec] compiler/spec/fake.py:2: `import taxonc.runtime.tokenizer as tok` imports "
                        f"taxonc.runtime.tokenizer; rule: {_only('spec').says} (design.md, Packages and layering)"]


def test_checker_resolves_package_inits_and_deep_relative_imports() -> None:
    # in a package's __init__.py, "." is the package itself
    assert [i.module for i in imports_of("from . import build\nfrom .. import errors\n", "compiler/ir/__init__.py")] == [
        "taxonc.compiler.ir.build", "taxonc.compiler.errors"]
    # three dots from compiler/ir/x.py leave taxonc.compiler for the taxonc namespace
    assert _only("ir").violations([("compiler/ir/x.py", "from ...kernels.reference import rms_norm\n")]) == []
    assert _only("ir").violations([("compiler/ir/x.py", "from ...kernels import attention\n")])
    # compiler/testing is taxonc.testing, not taxonc.compiler.testing
    assert [i.module for i in imports_of("from .properties import x\n", "compiler/testing/plugin.py")] == ["taxonc.testing.properties"]
    # runtime reaching the compiler through a relative import
    problems = _only("runtime").violations([("runtime/fake.py", "def f():\n    from ..compiler import compile\n")])
    assert len(problems) == 1 and problems[0].startswith("[runtime] runtime/fake.py:2: ")
    # kernels: a third-party import outside torch/triton/numpy
    problems = _only("kernels").violations([("kernels/fake.py", "import torch\nimport triton.language as tl\nimport jinja2\n")])
    assert len(problems) == 1 and "kernels/fake.py:3" in problems[0] and "jinja2" in problems[0]


def test_checker_finds_a_violation_in_a_file_tree(tmp_path: Path) -> None:
    fake = tmp_path / "compiler" / "passes" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..ir.graph import Graph\n\n\ndef emit():\n    from ..backends.torch_src import emit\n    return emit\n")
    problems = _only("passes").violations(_tree(tmp_path))
    assert len(problems) == 1
    assert problems[0].startswith("[passes] compiler/passes/fake.py:5: `from ..backends.torch_src import emit` imports "
                                  "taxonc.compiler.backends.torch_src.emit; rule: compiler/passes may import ir, spec, errors")
