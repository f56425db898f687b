"""The Docker image: the same gunicorn command and config as the README, a non-root user, /healthz served.

Building the image downloads the base image and every dependency (minutes on a cold cache), so the build
test is opt-in (``EPM_DOCKER_TESTS=1``) and skipped with the reason where no Docker engine answers. The
checks of the Dockerfile itself run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid

import httpx
import pytest

from tests.support import ROOT, wait_for

COMMAND = ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_image_runs_the_readmes_gunicorn_command_with_its_config_as_a_user_who_is_not_root():
    text = dockerfile()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd and json.loads(cmd.group(1)) == COMMAND
    assert " ".join(COMMAND) in (ROOT / "README.md").read_text()
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in (ROOT / "Makefile").read_text()
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0"), "the last USER runs the server"
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^EXPOSE 8000$", text, re.MULTILINE) and "/healthz" in text.split("HEALTHCHECK", 1)[1]


def test_the_build_context_leaves_out_the_virtualenv_the_repository_and_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", ".git", "instance", "tests", "**/__pycache__", ".pytest_cache"} <= ignored
    assert not ignored & {"epm", "README.md", "setup.cfg", "pyproject.toml", "gunicorn.conf.py", "wsgi.py"}


def _docker_engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no Docker engine here: the docker command is not installed")
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0 or not info.stdout.strip():
        reason = (info.stderr.strip().splitlines() or ["docker info failed"])[-1]
        pytest.skip(f"no Docker engine here: {reason}")
    if os.environ.get("EPM_DOCKER_TESTS") != "1":
        pytest.skip("building the image takes minutes: set EPM_DOCKER_TESTS=1 to run it")


def docker(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"docker {' '.join(args)}: {result.stderr[-2000:]}"
    return result.stdout.strip()


def test_the_image_builds_runs_as_non_root_and_serves_healthz():
    _docker_engine()
    tag = f"epm-test:{uuid.uuid4().hex[:8]}"
    docker("build", "--tag", tag, str(ROOT), timeout=900)
    container = None
    try:
        size_mb = int(docker("image", "inspect", "--format", "{{.Size}}", tag)) / 1e6
        print(f"image {tag}: {size_mb:.0f} MB")
        assert size_mb < 400, f"the image should stay small, it is {size_mb:.0f} MB"
        container = docker("run", "--detach", "--publish", "127.0.0.1::8000", "--health-interval", "1s", tag)
        assert docker("exec", container, "id", "-u") != "0"
        write = subprocess.run(["docker", "exec", container, "touch", "/app/epm/probe"], capture_output=True)
        assert write.returncode != 0, "the app's code is read-only for the user running it"
        port = docker("port", container, "8000/tcp").splitlines()[0].rsplit(":", 1)[1]

        def healthz() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json() == {"status": "ok"}
            except httpx.HTTPError:
                return False

        wait_for(healthz, 60, 0.5, "the container to serve /healthz")
        wait_for(lambda: docker("inspect", "--format", "{{.State.Health.Status}}", container) == "healthy", 30, 0.5,
                 "Docker's HEALTHCHECK to pass")
        processes = docker("top", container, "-o", "uid,args").splitlines()[1:]
        assert len(processes) >= 2, "the gunicorn master and its workers"
        assert all(line.split()[0] != "0" for line in processes), processes
    finally:
        if container:
            subprocess.run(["docker", "rm", "--force", container], capture_output=True, timeout=60)
        subprocess.run(["docker", "image", "rm", "--force", tag], capture_output=True, timeout=120)
