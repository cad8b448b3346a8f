"""The operator image, built here from operator/Dockerfile with nothing pulled from a registry.

Where no container registry is reachable (this project's CI), the Dockerfile's default base
image cannot be pulled. So:

1. the base image is made with ``debootstrap`` (Debian bookworm, minbase, with python3 and its
   venv module) and brought in with ``docker import``; it is tagged by what went into it, so it
   is made once per machine;
2. heatshift's dependencies are built as wheels on this machine with its own pip (and its
   package index settings) into ``operator/wheels/``;
3. ``docker build`` runs the unchanged Dockerfile with ``BASE`` set to that image and
   ``PIP_OPTIONS=--no-index``: the build container needs no network at all.

``python e2e/image.py`` builds it and prints the image's name; the e2e suite calls
:func:`build` (it needs a Docker engine and, the first time, root for debootstrap).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "heatshift-e2e/base"
IMAGE = "heatshift/heatshift:e2e"
WHEELS = ROOT / "operator" / "wheels"


class ImageError(Exception):
    """The image could not be built; the message says which step and why."""


def _run(what: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload, no-any-return]
    except FileNotFoundError as err:
        raise ImageError(f"{what}: {argv[0]} is not installed") from err
    except subprocess.CalledProcessError as err:
        tail = "\n".join((err.stderr or err.stdout or "").splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {err.returncode}):\n{tail}") from err


def docker_works() -> bool:
    """Whether a Docker engine answers (not only the client)."""
    if shutil.which("docker") is None:
        return False
    found = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return found.returncode == 0


def _exists(image: str) -> bool:
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    return found.returncode == 0


def base_tag() -> str:
    """The base image's name: its recipe's hash, so a changed recipe makes a new one."""
    recipe = f"{SUITE} {MIRROR} minbase {' '.join(BASE_PACKAGES)}"
    return f"{BASE_REPOSITORY}:{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def can_build() -> str | None:
    """Why the image cannot be built here, or None: a Docker engine must answer, and making
    the base image (once) needs root, for debootstrap."""
    if not docker_works():
        return "no Docker engine answers (`docker info` failed): start dockerd"
    if os.geteuid() != 0 and not _exists(base_tag()):
        return f"making the base image {base_tag()} needs root (debootstrap)"
    return None


def base_image() -> str:
    """The debootstrapped base image, made unless an identical one exists."""
    tag = base_tag()
    if _exists(tag):
        return tag
    with tempfile.TemporaryDirectory(prefix="heatshift-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _run(
            "debootstrap of the base image",
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
        )
        # No apt lists or caches in the image: they are only the build's.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(rootfs / leftover, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            _run(
                "docker import of the base image", ["docker", "import", "-", tag], stdin=tar.stdout
            )
        finally:
            if tar.stdout is not None:
                tar.stdout.close()
            tar.wait()
    return tag


def wheels() -> Path:
    """heatshift's dependencies and build backend as wheels in operator/wheels/."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    backend = project["build-system"]["requires"]
    _run(
        "building the dependencies' wheels",
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(WHEELS),
            ".",
            *backend,
        ],
        cwd=ROOT,
    )
    for built in WHEELS.glob("heatshift-*.whl"):
        built.unlink()  # the image builds heatshift from the sources it copies
    return WHEELS


def build(image: str = IMAGE) -> str:
    """Build the operator image as ``image`` from the local base and wheels; its name."""
    why_not = can_build()
    if why_not is not None:
        raise ImageError(why_not)
    base = base_image()
    wheels()
    _run(
        "docker build of the operator image",
        [
            "docker",
            "build",
            "--file",
            str(ROOT / "operator" / "Dockerfile"),
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            "PIP_OPTIONS=--no-index",
            "--tag",
            image,
            str(ROOT),
        ],
    )
    return image


if __name__ == "__main__":
    try:
        print(build(sys.argv[1] if len(sys.argv) > 1 else IMAGE))
    except ImageError as err:
        sys.exit(f"e2e/image.py: {err}")
