"""The production install is the deployment: `pip install .` (no extras) boots the server and runs a job.

This follows the Dockerfile's own steps as far as a machine without a Docker engine allows: a clean
virtualenv with ``pip install .`` only, the package then uninstalled so the app runs from an ``/app``
layout (``gunicorn.conf.py``, ``wsgi.py``, ``epm/``) that is read-only to the server, the release step
``flask --app wsgi db upgrade``, and ``gunicorn -c gunicorn.conf.py wsgi:app`` as a user who is not root,
on real Redis and PostgreSQL. A dependency that only the test tools bring in (as ``packaging`` once was,
for gunicorn's gevent worker) makes this test fail where the rest of the suite would pass.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import ROOT, Browserish, PostgresDatabase, free_port, real_backends, wait_for

pytestmark = [pytest.mark.live, pytest.mark.real_backends]

PACKAGING_WARNINGS = ("absent from the `packages` configuration", "BuildBackendWarning", "SetuptoolsDeprecationWarning")


def _run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def image() -> Iterator[Path]:
    """A root folder laid out like the image: /opt/venv with the dependencies, /app with the code."""
    if real_backends() is None:
        pytest.skip("real backends not configured: set REDIS_URL and DATABASE_URL (.ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="epm-image-"))
    root.chmod(0o755)
    venv, app = root / "opt" / "venv", root / "app"
    created = _run(_python(), "-m", "venv", venv)
    assert created.returncode == 0, created.stderr
    source = root / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "node_modules", "instance",
                                                                 "__pycache__", "*.egg-info", "build", "tests"))
    installed = _run(venv / "bin" / "pip", "install", "--no-input", "-v", ".", cwd=source)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    warnings = [line for line in installed.stdout.splitlines() + installed.stderr.splitlines()
                if any(marker in line for marker in PACKAGING_WARNINGS)]
    assert not warnings, "packaging warnings:\n" + "\n".join(warnings[:5])
    removed = _run(venv / "bin" / "pip", "uninstall", "--yes", "epm")
    assert removed.returncode == 0, removed.stderr
    app.mkdir()
    for name in ("gunicorn.conf.py", "wsgi.py"):
        shutil.copy(source / name, app / name)
    shutil.copytree(source / "epm", app / "epm")
    compiled = _run(venv / "bin" / "python", "-m", "compileall", "-q", "epm", "wsgi.py", "gunicorn.conf.py", cwd=app)
    assert compiled.returncode == 0, compiled.stdout
    _read_only(app)
    (app / "instance").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _python() -> str:
    """A Python 3.11+ that an unprivileged user may run: Debian's own, as on a fresh machine and in the image.

    The suite's interpreter may live under /root (pyenv), where the app's user cannot reach it.
    """
    for candidate in ("/usr/bin/python3.11", "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            version = _run(candidate, "-c", "import sys, venv; print(sys.version_info >= (3, 11))")
            if version.returncode == 0 and version.stdout.strip() == "True":
                return candidate
    return sys.executable


def _read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
                   | (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH if path.is_dir() else 0))


def _as_app_user(instance: Path) -> list[str]:
    """The command prefix that runs the server as an unprivileged user (when the test runs as root)."""
    if os.geteuid() != 0 or _python() == sys.executable and str(Path(sys.executable).resolve()).startswith("/root/"):
        return []
    user = pwd.getpwnam("nobody")
    os.chown(instance, user.pw_uid, user.pw_gid)
    return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def server(image) -> Iterator[str]:
    redis_url, database_url = real_backends()
    database = PostgresDatabase(database_url)
    venv, app = image / "opt" / "venv", image / "app"
    port = free_port()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(app / "instance"), "PYTHONDONTWRITEBYTECODE": "1",
           "REDIS_URL": redis_url, "DATABASE_URL": database.url, "SECRET_KEY": uuid.uuid4().hex,
           "EPM_KEY_PREFIX": f"epminstall:{uuid.uuid4().hex[:8]}:", "HOST": "127.0.0.1", "PORT": str(port),
           "EPM_GRACEFUL_TIMEOUT": "5", "LOG_LEVEL": "WARNING"}
    prefix = _as_app_user(app / "instance")
    release = _run(*prefix, venv / "bin" / "flask", "--app", "wsgi", "db", "upgrade", cwd=app, env=env)
    assert release.returncode == 0, release.stderr[-3000:]
    log_path = image / "gunicorn.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*prefix, str(venv / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
                                   cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError("gunicorn exited:\n" + log_path.read_text(errors="replace")[-3000:])
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, message="the installed server to answer /healthz")
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
        database.drop()


def test_the_installed_server_is_ready_on_real_backends(server):
    ready = httpx.get(server + "/readyz", timeout=10)
    assert ready.status_code == 200, ready.text


def test_the_installed_server_runs_a_job_end_to_end(server):
    user = Browserish(server).signup()
    try:
        created = user.post("/api/sessions", json={"name": "Installed", "business": "A bakery chain.",
                                                   "objectives": ["Open two shops"], "team_size": 4})
        assert created.status_code == 201, created.text
        session = created.json()["session"]
        started = user.post(f"/api/sessions/{session['id']}/epm_generation")
        assert started.status_code == 202, started.text
        job = user.wait_finished(started.json()["job"]["id"], timeout=60)
        assert job["status"] == "completed", job
        assert user.get(job["result"]["url"]).status_code == 200
    finally:
        user.close()
