import os
from pathlib import Path

import torch

# Triton kernels run under the interpreter when there is no GPU. The flag must be set before
# any kernel is defined, hence here, before tests import taxonc.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run tiny models: one thread avoids OpenMP hand-off costs that dwarf the math.
torch.set_num_threads(1)

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

settings.register_profile(
    "ci", max_examples=30, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("TAXONC_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_addoption(parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files from current output.")
