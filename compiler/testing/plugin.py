"""pytest plugin (entry point `pytest11: taxonc`): hypothesis profiles and spec fixtures.

In a user's test file:

    import taxonc.testing as tt

    @tt.given_spec("specs/mine.toml")
    def test_mine_is_causal(subject):
        assert tt.check_causality(subject).ok

    @pytest.mark.taxonc_spec("specs/mine.toml")
    def test_mine_caches(taxonc_subject):
        assert tt.check_kv_cache(taxonc_subject).ok

Profiles: `ci` (bounded, derandomised, no database), `dev`, `thorough`; choose one with
`--taxonc-profile NAME` or the TAXONC_HYPOTHESIS_PROFILE environment variable.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

PROFILES = {
    "ci": dict(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]),
    "dev": dict(max_examples=60, deadline=None),
    "thorough": dict(max_examples=1000, deadline=None),
}
for _name, _kw in PROFILES.items():
    settings.register_profile(_name, **_kw)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--taxonc-profile", choices=sorted(PROFILES), default=None, help="hypothesis profile for taxonc checks")


def load_profile(name: str | None = None) -> str:
    """Load hypothesis profile `name`, else TAXONC_HYPOTHESIS_PROFILE, else `ci` under CI and
    `dev` elsewhere; returns the name loaded."""
    name = name or os.environ.get("TAXONC_HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
    settings.load_profile(name)
    return name


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "taxonc_spec(path, scale='tiny'): the spec the taxonc_subject fixture compiles")
    load_profile(config.getoption("--taxonc-profile"))


@pytest.fixture
def taxonc_subject(request: pytest.FixtureRequest):
    """The spec named by @pytest.mark.taxonc_spec, compiled at tiny scale with test weights."""
    from .properties import load_subject

    marker = request.node.get_closest_marker("taxonc_spec")
    if marker is None:
        raise pytest.UsageError("taxonc_subject needs @pytest.mark.taxonc_spec('path/to/spec.toml')")
    return load_subject(marker.args[0], **marker.kwargs)
