"""Shared fixtures. Every test gets a private, empty ropefix cache unless it asks for the shared one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from wheelenv import WHEEL_RELEASE, make_env, wheel

from ropefix.store import ENV_VAR, Store


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ROPEFIX_CACHE at a fresh folder so no test writes to a user's real cache."""
    root = tmp_path_factory.mktemp("ropefix-cache")
    monkeypatch.setenv(ENV_VAR, str(root))
    return root


@pytest.fixture(scope="session")
def shared_store() -> Store:
    """A cache kept between test runs for slow downloads (real sdists from the index).

    ``ROPEFIX_TEST_CACHE`` overrides its place; the default lives in the user cache, apart
    from the user's own ropefix cache.
    """
    root = os.environ.get("ROPEFIX_TEST_CACHE") or str(Path.home() / ".cache" / "ropefix-tests")
    return Store(Path(root))


@pytest.fixture(scope="session")
def pristine_env(shared_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding transformers WHEEL_RELEASE installed from its wheel (built once per session)."""
    root = tmp_path_factory.mktemp("wheelenv") / "venv"
    make_env(root, wheel(shared_store, WHEEL_RELEASE))
    return root


@pytest.fixture
def site(pristine_env: Path, tmp_path: Path) -> Path:
    """The site-packages of a private copy of that venv, so each test may change its files."""
    env = tmp_path / "venv"
    shutil.copytree(pristine_env, env, symlinks=True)
    return next(env.glob("lib/python*/site-packages"))


def _register_hypothesis_profiles() -> None:
    from hypothesis import HealthCheck, settings

    slow_ok = [HealthCheck.too_slow, HealthCheck.data_too_large]
    # ci: derandomised and bounded, so CI runs the same examples every time.
    settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, suppress_health_check=slow_ok)
    settings.register_profile("dev", max_examples=60, deadline=None, suppress_health_check=slow_ok)
    settings.register_profile("deep", max_examples=1000, deadline=None, suppress_health_check=slow_ok)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


_register_hypothesis_profiles()
