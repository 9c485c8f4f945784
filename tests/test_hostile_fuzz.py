"""The hostile-input fuzzer (issue 15): mutated specs, lock files and safetensors files.

Every outcome must be a success or the project's clean error: exit code 0 or 1 (these inputs are
bad input, never a usage error), no exception escaping the CLI, no traceback, and error lines that
are each one line of plain text naming a file. Each input is bounded in time and memory:

- time: the spec layer (`taxonc validate`) must take under 2 s of CPU time per input. CPU time,
  not wall-clock, because six engineers share two cores; a loop that hangs burns CPU and fails.
  A SIGALRM turns anything that blocks (a read that never returns) into a failure after 30 s.
- memory: each command runs under an address-space limit (RLIMIT_AS) of 1 GiB above what the
  process has already mapped, so a runaway allocation (a per-layer list of a billion layers)
  fails as a MemoryError, which the checks report, before it can exhaust the shared machine.
  tracemalloc would miss torch's own allocator and double the run time, and ru_maxrss is a
  process-wide high-water mark that one earlier test can hide; the limit is exact and free.

Examples per target: 200 in the default profiles, 10,000 in `thorough`
(TAXONC_HYPOTHESIS_PROFILE=thorough or --taxonc-profile thorough; docs/usage.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import signal
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from taxonc.compiler.cli import app
from taxonc.testing.hostile import BASE, MAIN, hostile_locks, hostile_safetensors, hostile_spec_files

from .conftest import SPECS

# get_current_profile_name is newer than the oldest hypothesis allowed; the variable is the plugin's own choice
_profile = getattr(settings, "get_current_profile_name", lambda: os.environ.get("TAXONC_HYPOTHESIS_PROFILE"))()
THOROUGH = _profile == "thorough"
FUZZ = settings(max_examples=10_000 if THOROUGH else 200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
SPEC_LAYER_CPU_S = 2.0
HANG_S = 30
HEADROOM = 1 << 30

BASES = [p.read_text() for p in sorted(SPECS.glob("*.toml"))] + [p.read_text() for p in sorted((SPECS / "recipes").glob("*.toml"))]
runner = CliRunner()


@contextlib.contextmanager
def bounded(what: str, hang_s: int = HANG_S) -> Iterator[None]:
    """At most `hang_s` seconds of wall-clock time and HEADROOM more bytes of address space."""
    def hang(signum, frame):
        raise TimeoutError(f"{what} did not finish in {hang_s} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(hang_s)
    limits = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()  # Linux: pages mapped now
    cap = mapped + HEADROOM if limits[1] == resource.RLIM_INFINITY else min(mapped + HEADROOM, limits[1])
    resource.setrlimit(resource.RLIMIT_AS, (cap, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(args: list[str]):
    with bounded("taxonc " + " ".join(args)[:200]):
        return runner.invoke(app, args)


def _plain(line: str) -> bool:
    """No control characters and no line or paragraph separators: what is printed is one line of text."""
    return not any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in line)


PROBLEM = re.compile(r"\S*?\.toml(:\d+(:\d+)?)?: ")  # a spec file, its line and column, then the key


def assert_clean(result, args: list[str], file_named: str | None = None) -> list[str]:
    """Exit 0 or 1, nothing escaping, plain one-line errors; returns the output's lines."""
    shown = f"taxonc {' '.join(args)[:300]} -> exit {result.exit_code}\n{result.output[-3000:]}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{shown}\nescaped: {result.exception!r}") from result.exception
    assert result.exit_code in (0, 1), shown
    assert "Traceback" not in result.output and "MemoryError" not in result.output, shown
    lines = [line for line in result.output.split("\n") if line]
    assert all(_plain(line) for line in lines), shown
    if result.exit_code == 1 and file_named is not None:
        assert lines and all(file_named in line for line in lines), shown
    return lines


# ----------------------------------------------------------------------------- spec files

@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of specs/ (mutated files extend real ones) with odd things to extend: a symlink loop,
    a link to /dev/zero, a FIFO and a directory, each named like a spec."""
    root = Path(shutil.copytree(SPECS, tmp_path_factory.mktemp("fuzz") / "specs"))
    (root / "loop.toml").symlink_to("loop.toml")
    (root / "zero.toml").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.toml")
    (root / "folder.toml").mkdir()
    return root


def _validate_lines_ok(lines: list[str], code: int, spec: Path) -> None:
    for line in lines:
        if line.startswith(("ok ", "fail ")):
            assert str(spec) in line, line
        elif line.startswith("  "):
            assert PROBLEM.match(line[2:]), line
        else:
            assert code == 1 and re.fullmatch(r"1 of 1 spec\(s\) invalid", line), line


@FUZZ
@given(files=hostile_spec_files(BASES))
def test_mutated_specs_validate_count_and_compile_cleanly(workspace: Path, files: dict[str, bytes]) -> None:
    for name in (MAIN, BASE):
        (workspace / name).unlink(missing_ok=True)
    for name, data in files.items():
        (workspace / name).write_bytes(data)
    spec, out = workspace / MAIN, workspace.parent / "out"
    shutil.rmtree(out, ignore_errors=True)

    start = time.process_time()
    validated = invoke(["validate", str(spec)])
    spent = time.process_time() - start
    assert spent < SPEC_LAYER_CPU_S, f"the spec layer took {spent:.2f} s of CPU time"
    _validate_lines_ok(assert_clean(validated, ["validate", str(spec)]), validated.exit_code, spec)

    args = ["params", str(spec)]
    counted = invoke(args)
    for line in assert_clean(counted, args) if counted.exit_code == 1 else []:
        assert PROBLEM.match(line), line

    args = ["compile", str(spec), "--scale", "tiny", "-q", "-o", str(out)]
    compiled = invoke(args)
    for line in assert_clean(compiled, args) if compiled.exit_code == 1 else []:
        assert PROBLEM.match(line), line
    event(f"validate {validated.exit_code}, params {counted.exit_code}, compile {compiled.exit_code}")
    # A spec refused by validate is refused everywhere, except by the published-count rule alone: that
    # rule asks for a written reason (published.deviation), and `params` is where one looks at the miss.
    problems = [line for line in validated.output.splitlines() if PROBLEM.match(line.strip())]
    only_published = bool(problems) and all(": published." in line for line in problems)
    if validated.exit_code == 1 and not only_published:
        assert counted.exit_code == 1 and compiled.exit_code == 1, (counted.output, compiled.output)
    if compiled.exit_code == 0:  # spec text never breaks the emitted code: it imports and builds
        json.loads((out / "spec.lock.json").read_text())
        _build(out / "model.py")
    else:
        assert not out.exists(), "a refused compile left output behind"


def _build(model_py: Path) -> None:
    from taxonc.runtime.artifact import import_model

    with bounded(f"building {model_py}"):
        module = import_model(model_py)
        try:
            module.build().eval()
        finally:
            sys.modules.pop(module.__name__, None)  # 10,000 examples must not pile up modules


# ----------------------------------------------------------------------------- lock files and safetensors files

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-artifact") / "llama-tiny"
    result = runner.invoke(app, ["compile", str(SPECS / "llama.toml"), "--scale", "tiny", "-o", str(out), "-q", "--init-weights"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def strategies(built: Path) -> dict:
    """Strategies over this run's own artifact, made once (hypothesis draws from them with st.data())."""
    return {"lock": hostile_locks(json.loads((built / "spec.lock.json").read_text())),
            "weights": hostile_safetensors((built / "weights.safetensors").read_bytes())}


# The mutated lock is written through the ArtifactWriter, so the manifest vouches for it and the
# lock reader itself (runtime/spec_lock.py) is what must refuse it; a lock edited after sealing is
# refused by the manifest, which tests/test_hostile_artifacts.py covers.
@FUZZ
@given(data=st.data())
def test_mutated_locks_run_or_are_refused_cleanly(built: Path, strategies: dict, data: st.DataObject) -> None:
    lock = data.draw(strategies["lock"], label="spec.lock.json")
    from taxonc.runtime.artifact_store import ArtifactWriter
    from taxonc.runtime.manifest import MANIFEST

    artifact = built.parent / "damaged-lock"
    with ArtifactWriter(artifact) as staging:
        for path in built.iterdir():
            if path.name not in (MANIFEST, "spec.lock.json"):
                staging.write_bytes(path.name, path.read_bytes())
        staging.write_bytes("spec.lock.json", lock)
    args = ["run", str(artifact), "--prompt", "x", "--max-new-tokens", "1", "--json"]
    loaded = set(sys.modules)
    try:
        result = invoke(args)
    finally:  # each load imports model.py afresh; 10,000 examples must not pile up modules
        for name in set(sys.modules) - loaded:
            if name.startswith("taxonc_artifact_"):
                del sys.modules[name]
    lines = assert_clean(result, args, file_named=str(artifact))
    assert len(lines) == 1, result.output
    if result.exit_code == 0:  # the spec the lock describes is the model's, or the lock is refused
        assert json.loads(lock)["spec"] == json.loads((built / "spec.lock.json").read_text())["spec"]


@FUZZ
@given(data=st.data())
def test_mutated_safetensors_load_or_are_refused_cleanly(built: Path, strategies: dict, data: st.DataObject) -> None:
    from taxonc.runtime.errors import WeightsError
    from taxonc.runtime.weights import SPEC_KEY, load_weights

    weights = data.draw(strategies["weights"], label="weights.safetensors")
    path = built.parent / "damaged.safetensors"
    path.write_bytes(weights)
    model, digest, pristine = _model(built)
    model.load_state_dict(pristine)  # examples stay independent: an earlier load may have succeeded
    try:
        with bounded("load_weights"):
            meta = load_weights(model, path, digest, "llama")
    except WeightsError as exc:
        message = str(exc)
        assert message.startswith(str(path)) and _plain(message), message
        after = model.state_dict()  # compared bit for bit: loaded bytes may hold NaNs
        assert all(after[k].numpy().tobytes() == pristine[k].numpy().tobytes() for k in pristine), "a refused load changed the model"
        event("refused: " + next((why for why in REFUSALS if why in message), "other"))
    else:
        assert meta[SPEC_KEY] == digest
        event("loaded")


REFUSALS = ("not a readable", "tensors do not match", "weights do not match", "no spec hash", "has shape", "never cast")
_MODELS: dict[Path, tuple] = {}


def _model(built: Path) -> tuple:
    """The artifact's model, built once: importing model.py per example would pile up modules."""
    if built not in _MODELS:
        from taxonc.runtime.artifact import import_model

        module = import_model(built / "model.py")
        model = module.build().eval()
        pristine = {k: v.clone() for k, v in model.state_dict().items()}
        _MODELS[built] = (model, json.loads((built / "spec.lock.json").read_text())["spec_sha256"], pristine)
    return _MODELS[built]


# ----------------------------------------------------------------------------- the checks themselves can fail

def test_the_memory_bound_stops_a_runaway_allocation() -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    with bounded("a 2 GiB allocation"):
        with pytest.raises(MemoryError):
            bytearray(2 * HEADROOM)  # refused by the limit before a page is touched
    assert resource.getrlimit(resource.RLIMIT_AS) == before


def test_the_time_bound_stops_a_blocking_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(TimeoutError):
        with bounded("a read of a FIFO with no writer", hang_s=1):
            (tmp_path / "pipe").read_bytes()


@pytest.mark.parametrize(("exception", "code", "output"), [
    (KeyError("dims"), 1, ""),  # an exception escaped the command
    (None, 2, "x.toml: dims: bad\n"),  # bad input is exit 1, not a usage error
    (None, 1, "Traceback (most recent call last):\n"),
    (None, 1, "x.toml: a\x1b[2Jb: unknown key\n"),  # a raw escape sequence
    (None, 1, "x.toml: a\u2028b: unknown key\n"),  # a line separator
    (None, 1, "somewhere else: bad\n"),  # an error that names no file
])
def test_the_outcome_check_refuses_what_is_not_clean(exception, code: int, output: str) -> None:
    from types import SimpleNamespace

    result = SimpleNamespace(exception=exception, exit_code=code, output=output)
    with pytest.raises(AssertionError):
        assert_clean(result, ["validate", "x.toml"], file_named="x.toml")


def test_the_outcome_check_accepts_a_clean_error() -> None:
    from types import SimpleNamespace

    result = SimpleNamespace(exception=SystemExit(1), exit_code=1, output="x.toml:3:1: dims.n_layers: must be > 0\n")
    assert assert_clean(result, ["validate", "x.toml"], file_named="x.toml") == ["x.toml:3:1: dims.n_layers: must be > 0"]
