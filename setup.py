"""The package list, which pyproject.toml cannot express: every package under
hub/ and protocol/, plus the dashboard. The dashboard stays in static/ at the
top of the repository and is shipped as the package ``hub.static``, so the
hub finds it with importlib.resources in a wheel and in an editable install
alike (everything else is in pyproject.toml)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["hub*", "protocol*"]), "hub.static"],
    package_dir={"hub.static": "static"},
)
