"""The package a user installs: the wheel built with the standard backend
carries the dashboard and the migrations, passes ``twine check``, and
``beadhub serve`` from it works from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import hub
from tests.support import ROOT, HubProcess, free_port, onboard

#: What the wheel is built from (a copy, so the build leaves the checkout alone).
SOURCES = ["hub", "protocol", "static", "pyproject.toml", "setup.py", "README.md"]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built from it by ``python -m build`` (without
    network: the build backend comes from the test venv)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, source / name)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return out


def wheel_of(dist: Path) -> Path:
    (wheel,) = dist.glob("beadhub-*.whl")
    return wheel


def test_the_wheel_carries_the_dashboard_and_the_migrations(dist):
    names = set(zipfile.ZipFile(wheel_of(dist)).namelist())
    for page in (ROOT / "static").rglob("*"):
        if page.is_file() and "__pycache__" not in page.parts:
            assert f"hub/static/{page.relative_to(ROOT / 'static')}" in names
    for migration in (ROOT / "hub/store/migrations").glob("*.sql"):
        assert f"hub/store/migrations/{migration.name}" in names
    assert not [name for name in names if "__pycache__" in name]
    assert f"beadhub-{hub.__version__}.dist-info/METADATA" in names


def test_twine_check_passes(dist):
    files = [str(path) for path in dist.iterdir()]
    assert len(files) == 2  # the sdist and the wheel
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("PASSED") == 2


def output(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def serve_installed(venv: Path, cwd: Path, log: Path) -> HubProcess:
    """``beadhub serve`` of the installed wheel, from ``cwd``, with no
    settings at all (the embedded PostgreSQL in ``cwd/.beadhub``), until
    ready."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    hub_process = HubProcess(port=port, log_path=log)
    with log.open("wb") as out:
        hub_process.proc = subprocess.Popen(
            [str(venv / "bin/beadhub"), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return hub_process.wait_ready(timeout=60)  # /ready: the wheel's migrations ran


@pytest.fixture
def installed(dist, tmp_path) -> Path:
    """A fresh venv with only the wheel installed in it; its dependencies come
    from the test venv's site-packages (through a .pth file, so no network),
    which is not where ``hub`` is found."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(
        output(venv / "bin/python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    )
    (site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install",
         "--no-deps", "--no-index", "-q", str(wheel_of(dist))],
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A directory far from the checkout, that any account may enter (as
    root the embedded PostgreSQL runs as an unprivileged account)."""
    path = Path(tempfile.mkdtemp(prefix="beadhub-elsewhere-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_the_installed_wheel_serves_the_dashboard_from_another_directory(
    installed, elsewhere, tmp_path
):
    where = output(
        installed / "bin/python",
        "-c",
        "import hub.app; print(hub.app.dashboard_dir())",
        cwd=elsewhere,
    )
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout
    assert output(installed / "bin/beadhub", "--version") == f"beadhub {hub.__version__}"

    hub_process = serve_installed(installed, elsewhere, tmp_path / "hub.log")
    try:
        alice = await onboard(hub_process.http_url, "from-the-wheel", "alice")
        assert alice["api_key"]  # the wheel's migrations made the schema
        async with httpx.AsyncClient(base_url=hub_process.http_url, timeout=10) as http:
            page = await http.get("/")
            script = await http.get("/app.js")
            package_file = await http.get("/__init__.py")
            health = (await http.get("/health")).json()
        assert page.status_code == 200
        assert page.text == (ROOT / "static/index.html").read_text()
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
        assert package_file.status_code == 404
        assert health["version"] == hub.__version__
    finally:
        assert hub_process.stop() == 0, hub_process.log()
    assert (elsewhere / ".beadhub/pgdata/PG_VERSION").is_file()  # data where it was started
