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
    parser.addoption("--run-slow", action="store_true", help="Also run tests marked slow (training runs of a minute or more).")
    parser.addoption("--all-specs", action="store_true",
                     help="Run per-spec loops over every spec, not one per tiny-scale structure (tests/spec_sets.py).")


def _all_specs_requested(config) -> bool:
    from . import spec_sets

    markexpr = config.getoption("-m") or ""
    return bool(config.getoption("--all-specs") or spec_sets.ALL_SPECS_REQUESTED
                or ("all_specs" in markexpr and "not all_specs" not in markexpr))


def pytest_configure(config) -> None:
    # before collection, so module-level spec lists (hypothesis' sampled_from) see the choice
    from . import spec_sets

    spec_sets.ALL_SPECS_REQUESTED = _all_specs_requested(config)


def pytest_collection_modifyitems(config, items) -> None:
    _skip_slow(config, items)
    _deselect_other_specs(config, items)


def _skip_slow(config, items) -> None:
    if config.getoption("--run-slow") or os.environ.get("TAXONC_SLOW") == "1":
        return
    import pytest

    skip = pytest.mark.skip(reason="slow: run with --run-slow or TAXONC_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def _deselect_other_specs(config, items) -> None:
    """Deselect the non-representative specs of per-spec loops (marked all_specs by
    tests/spec_sets.py) unless every spec was asked for or the test was named by its id."""
    if _all_specs_requested(config) or "all_specs" in (config.getoption("-m") or ""):
        return  # everything, or -m selects on the marker itself
    named = {arg.rsplit("::", 1)[-1] for arg in config.args if "::" in arg}
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("all_specs") and item.name not in named else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
