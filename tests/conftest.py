import os
from pathlib import Path

import torch

# Triton kernels run under the interpreter when there is no GPU. The flag must be set before
# any kernel is defined, hence here, before tests import taxonc.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run tiny models: one thread avoids OpenMP hand-off costs that dwarf the math.
torch.set_num_threads(1)

from taxonc.testing.plugin import load_profile

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"

# The hypothesis profiles (ci, dev, thorough) are the taxonc pytest plugin's; its
# pytest_configure loads one again, honouring --taxonc-profile. Loading here as well keeps
# them in force when the plugin's entry point is disabled (-p no:taxonc).
load_profile()


def pytest_addoption(parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite golden files from current output.")
