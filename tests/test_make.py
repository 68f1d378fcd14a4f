"""The make targets a newcomer uses: ``make run`` installs the runtime only,
the test and dev tools come with ``make test`` / ``make lint``, and the
hub's data is deleted only by ``make clean-data``, after asking."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT


def make(*args: str, cwd: Path = ROOT, answer: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=cwd,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile and what it reads, with a venv, caches and hub data."""
    for name in ("Makefile", "pyproject.toml", "setup.py"):
        shutil.copy2(ROOT / name, tmp_path / name)
    for directory in (".venv/bin", ".pytest_cache", "build", ".beadhub/pgdata"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / ".beadhub/pgdata/PG_VERSION").write_text("18\n")
    return tmp_path


def test_make_run_installs_the_runtime_only_and_test_and_lint_the_dev_tools(tmp_path):
    venv = f"VENV={tmp_path / 'venv'}"  # a venv that does not exist yet: every step shows
    run, test, lint = (make("-n", target, venv).stdout for target in ("run", "test", "lint"))
    assert "pip install -q -e .\n" in run and "[dev]" not in run
    assert "beadhub serve" in run
    assert "pip install -q -e '.[dev]'" in test and "pytest" in test
    assert "pip install -q -e '.[dev]'" in lint and "ruff check" in lint


def test_make_clean_keeps_the_hub_data(checkout):
    result = make("clean", cwd=checkout)
    assert result.returncode == 0, result.stderr
    assert not (checkout / ".venv").exists() and not (checkout / "build").exists()
    assert (checkout / ".beadhub/pgdata/PG_VERSION").is_file()


def test_make_clean_data_asks_first(checkout):
    kept = make("clean-data", cwd=checkout, answer="n\n")
    assert kept.returncode == 0
    assert "Delete .beadhub" in kept.stdout and "kept .beadhub" in kept.stdout
    assert (checkout / ".beadhub/pgdata/PG_VERSION").is_file()
    silent = make("clean-data", cwd=checkout, answer="")  # no terminal, no answer: kept
    assert (checkout / ".beadhub").is_dir(), silent.stdout

    deleted = make("clean-data", cwd=checkout, answer="y\n")
    assert deleted.returncode == 0 and "deleted .beadhub" in deleted.stdout
    assert not (checkout / ".beadhub").exists()


@pytest.mark.skipif(shutil.which("flock") is None, reason="the check uses util-linux flock")
def test_make_clean_data_refuses_while_a_hub_holds_the_data_dir(checkout):
    with (checkout / ".beadhub/hub.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running hub holds
        refused = make("clean-data", cwd=checkout, answer="y\n")
    assert refused.returncode != 0
    assert "a hub is running on .beadhub: stop it first" in refused.stdout
    assert (checkout / ".beadhub/pgdata/PG_VERSION").is_file()
