"""The GPU image recipe (`patches/Dockerfile`) without a Docker engine: the plugin's version bounds admit
what TGI 3.3.7's image ships (it installs constrained to the image's versions, so a bound above them fails
the build), and the constraints it derives from the image's venv are ones uv accepts. hadolint and
shellcheck lint the recipe and its scripts in `nox -s lint`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
IMAGE_VERSIONS = REPO / "locks" / "tgi-3.3.7-image.txt"


def image_versions() -> dict[str, Version]:
    pins = [line.split("==") for line in IMAGE_VERSIONS.read_text().splitlines() if "==" in line]
    return {canonicalize_name(name): Version(version) for name, version in pins}


def plugin_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"] + project["optional-dependencies"]["tgi"]]


def test_plugin_bounds_admit_the_image_versions():
    shipped = image_versions()
    assert shipped["torch"] == Version("2.7.0") and shipped["transformers"] == Version("4.51.0")
    checked, refused = {}, {}
    for requirement in plugin_requirements():
        version = shipped.get(canonicalize_name(requirement.name))
        if version is not None:
            checked[requirement.name] = version
            if not requirement.specifier.contains(version, prereleases=True):
                refused[requirement.name] = str(version)
    assert len(checked) >= 8  # torch, transformers, peft, safetensors, numpy, pydantic, ... are all the image's
    assert refused == {}, f"tgi-csd's bounds exclude the image's versions: {refused}"


FREEZE = """\
-e file:///usr/src/server
accelerate==1.3.0
text-generation-server @ file:///usr/src/server
torch==2.7.0+cu128
flash-attn-v1 @ https://example.invalid/flash_attn-1.0.9.whl
Transformers==4.51.0
opentelemetry-instrumentation-grpc==0.50b0
"""


def test_pins_only_keeps_the_pins_and_drops_what_uv_refuses_as_constraints():
    out = subprocess.run(["sh", str(REPO / "patches" / "pins-only.sh")], input=FREEZE, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out == ["accelerate==1.3.0", "torch==2.7.0+cu128", "Transformers==4.51.0",
                   "opentelemetry-instrumentation-grpc==0.50b0"]
    for line in out:  # each a named, exactly pinned requirement: what a constraint must be
        requirement = Requirement(line)
        assert [spec.operator for spec in requirement.specifier] == ["=="] and not requirement.url
