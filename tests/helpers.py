"""Shared test helpers: run a benchmark script as its own process and read its records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from taxonc.compiler.spec.identity import IDENTITY_FIELDS

from .conftest import ROOT

# For a scratch spec that extends a real one only to vary its architecture: it takes the base's identity as is.
INHERIT_IDENTITY = "inherits = [" + ", ".join(f'"{field}"' for field in IDENTITY_FIELDS) + "]\n"


def run_script(path: str, *args: str, timeout: float = 600) -> list[dict]:
    """Run `python ROOT/path args...` and return the JSON objects it prints, one per line.

    Scripts run as users run them, from the repo root with this interpreter and environment
    (TRITON_INTERPRET included), on one thread; a failing run fails with its stderr.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / path), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{path} exited {done.returncode}:\n{done.stderr[-4000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
