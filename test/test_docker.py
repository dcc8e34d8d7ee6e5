"""The docker-compose stack: valid, and its app service uses the entry point and config path the tests cover."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


def _compose(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (apt-get install docker-compose; .ci/run does)"
    return subprocess.run([exe, "-f", str(ROOT / "docker-compose.yml"), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})}, cwd=ROOT)


def test_compose_file_is_valid():
    out = _compose("config", "-q")
    assert out.returncode == 0, out.stderr


def test_app_gets_its_database_url_from_the_environment():
    out = _compose("config", env={"POSTGRES_PASSWORD": "s3cret", "POSTGRES_USER": "fp"})
    assert out.returncode == 0, out.stderr
    assert "DEJAVU_DATABASE_URL: postgresql://fp:s3cret@db:5432/dejavu" in out.stdout
    assert "condition: service_healthy" in out.stdout


def test_dockerfile_runs_the_dejavu_console_script():
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["dejavu"]' in text and "ffmpeg" in text


@pytest.mark.parametrize("url, kind", [("postgresql://fp:s3cret@db:5432/dejavu", "postgres"),
                                       ("mysql://dejavu:dejavu@mysql:3306/dejavu", "mysql")])
def test_the_compose_urls_parse_to_the_right_backend(url, kind):
    from dejavu.config import load_config

    cfg = load_config(None, environ={"DEJAVU_DATABASE_URL": url})
    assert cfg.database_type == kind and cfg.database["host"] in ("db", "mysql")


def test_each_app_service_depends_only_on_its_database():
    out = _compose("--profile", "mysql", "config")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert set(services["app"]["depends_on"]) == {"db"}
    assert set(services["app-mysql"]["depends_on"]) == {"mysql"}
    assert services["app-mysql"]["environment"]["DEJAVU_DATABASE_URL"].startswith("mysql://")


def _healthcheck(text: str) -> str:
    """The shell command of the Dockerfile's HEALTHCHECK (continuation lines joined)."""
    joined = text.replace("\\\n", " ")
    [line] = [ln for ln in joined.splitlines() if ln.startswith("HEALTHCHECK")]
    return line.split(" CMD ", 1)[1].strip()


def test_the_image_runs_unprivileged_and_its_healthcheck_fails_without_a_store(tmp_path):
    """Static: the last USER is not root and comes before the HEALTHCHECK.  Then the check's
    own command is run here (``dejavu`` on PATH runs this checkout): healthy with a store,
    unhealthy when the configured database is unreachable."""
    text = (ROOT / "Dockerfile").read_text()
    users = [ln.split()[1] for ln in text.splitlines() if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0") and text.rindex("USER ") < text.index("HEALTHCHECK")
    command = _healthcheck(text)
    shim = tmp_path / "bin" / "dejavu"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "dejavu.py"}" "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{shim.parent}:{os.environ['PATH']}"}
    from dejavu import Dejavu

    Dejavu({"database": {"path": str(tmp_path / "fp.db")}}).close()
    for url, healthy in ((f"sqlite:///{tmp_path / 'fp.db'}", True), ("postgresql://u:p@127.0.0.1:1/x", False)):
        out = subprocess.run(["sh", "-c", command], env={**env, "DEJAVU_DATABASE_URL": url}, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert (out.returncode == 0) == healthy, (url, out.stderr)
