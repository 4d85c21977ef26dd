"""The image's install and entry point, replayed in a fresh virtualenv (no Docker engine here).

The Dockerfile is read, not restated: its ENV lines become the environment, its COPY lines say
what is copied into the work directory, its `RUN pip install` lines are run with the new
virtualenv's pip, and its ENTRYPOINT is what gets started (with `python` meaning the
virtualenv's interpreter). RUN lines that only manage the runtime user are skipped; any other
RUN line fails the test, so a new build step cannot be silently left out here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_deploy_artifacts import (
    CONTRACT_SETTINGS,
    DOCKERFILE,
    REPO,
    dockerfile_entrypoint,
    dockerfile_env,
    parse_dockerfile,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

# Image-only steps with no meaning outside a container (creating and switching the user).
SKIPPABLE_RUN = re.compile(r"^(useradd|groupadd|adduser|chown|chmod|mkdir)\b")
# The image disables pip's cache to keep the layer small; here the cache only saves downloads.
CACHE_ONLY_FLAGS = {"--no-cache-dir"}
CACHE_ONLY_ENV = {"PIP_NO_CACHE_DIR"}


@dataclass(frozen=True)
class Image:
    """A virtualenv and work directory laid out as the Dockerfile lays out the image."""

    python: Path
    workdir: Path
    tmpdir: Path
    env: dict[str, str]
    entrypoint: list[str]

    def run(self, *args: str, extra_env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = [str(self.python) if part == "python" else part for part in self.entrypoint]
        return subprocess.run(
            [*command, *args], cwd=self.workdir, env={**self.env, **(extra_env or {})},
            capture_output=True, text=True, timeout=timeout, check=False,
        )


def _copy(source: str, destination: str, workdir: Path) -> None:
    src = REPO / source
    dest = workdir / destination
    if src.is_dir():
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest if not destination.endswith("/") else dest / src.name)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Replays the Dockerfile into a fresh virtualenv (one install for every test here)."""
    root = tmp_path_factory.mktemp("image")
    venv_dir, workdir, tmpdir = root / "venv", root / "app", root / "tmp"
    workdir.mkdir()
    tmpdir.mkdir()
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    bin_dir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")

    instructions = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
    image_env = dockerfile_env(instructions)
    env = {
        **image_env,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(root),
        "TMPDIR": str(tmpdir),
    }
    install_env = {k: v for k, v in {**os.environ, **env}.items() if k not in CACHE_ONLY_ENV}
    for ins in instructions:
        if ins.keyword == "COPY":
            *sources, destination = shlex.split(ins.args)
            for source in sources:
                _copy(source, destination, workdir)
        elif ins.keyword == "RUN":
            argv = shlex.split(ins.args)
            if argv[:2] == ["pip", "install"]:
                argv = [str(python), "-m", "pip", *(a for a in argv[1:] if a not in CACHE_ONLY_FLAGS)]
                done = subprocess.run(argv, cwd=workdir, env=install_env, capture_output=True,
                                      text=True, timeout=540, check=False)
                assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
            else:
                assert SKIPPABLE_RUN.match(ins.args), (
                    f"RUN {ins.args!r} is neither `pip install` nor user setup: "
                    "teach this test what it does in the image"
                )
    return Image(python=python, workdir=workdir, tmpdir=tmpdir, env=env,
                 entrypoint=dockerfile_entrypoint(instructions))


def test_image_copies_only_requirements_and_code(image: Image) -> None:
    """The image's work directory holds requirements.txt and the app package, nothing else."""
    assert sorted(p.name for p in image.workdir.iterdir()) == ["app", "requirements.txt"]
    assert (image.workdir / "app" / "__main__.py").is_file()


def test_entry_point_help_lists_every_setting(image: Image) -> None:
    """`ENTRYPOINT --help` exits 0 in the installed image and lists every contract setting."""
    result = image.run("--help", timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    missing = {name for name in CONTRACT_SETTINGS if name not in result.stdout}
    assert missing == set()


def test_entry_point_demo_runs_end_to_end(image: Image) -> None:
    """`ENTRYPOINT --demo` exits 0 with only the image's dependencies and says where the result is."""
    result = image.run("--demo", extra_env={"LOG_LANGUAGE": "en"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    results = [
        path
        for base in (image.workdir, image.tmpdir)
        for path in base.rglob("conversions.ndjson.gz")
    ]
    assert results, "the demo wrote no conversions.ndjson.gz under the work or temp directory"
    mentioned = [p for p in results if any(n in output for n in _names_for(p, image.workdir))]
    assert mentioned, f"the demo's output does not say where {results[0]} is:\n{output[-3000:]}"


def _names_for(result: Path, workdir: Path) -> set[str]:
    """Ways the output may name the result: the file or its folder, absolute or relative."""
    names: set[str] = set()
    for path in (result, result.parent):
        for form in (path, path.resolve()):
            names.add(str(form))
            if form.is_relative_to(workdir):
                names.add(str(form.relative_to(workdir)))
                names.add("./" + str(form.relative_to(workdir)))
    return names - {".", "./."}

