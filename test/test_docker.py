"""The docker-compose stack: valid, and its app service uses the entry point and config path the tests cover."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

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
