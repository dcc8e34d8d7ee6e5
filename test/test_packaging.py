"""Issue 19: packaging.  pyproject.toml (PEP 621) builds a wheel with the extras and console
scripts, the version lives in dejavu/version.py only, ``pip install -r requirements.txt`` needs
no database client headers, and a missing MySQL driver says what to install."""
from __future__ import annotations

import email
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

#: Drivers that compile against system headers at install time: extras only.
HEADER_BUILDS = ("mysqlclient", "psycopg2", "PyAudio")


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [re.split(r"[<>=\[ ;#]", ln.strip())[0] for ln in lines if ln.strip() and not ln.startswith("#")]


def test_the_wheel_has_the_metadata_extras_and_scripts(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                          "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    [wheel] = tmp_path.glob("*.whl")
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "dejavu" / "version.py").read_text()).group(1)
    with zipfile.ZipFile(wheel) as zf:
        info = f"pydejavu-{version}.dist-info".lower()
        names = {n.lower(): n for n in zf.namelist()}
        meta = email.message_from_bytes(zf.read(names[f"{info}/metadata"]))
        scripts = zf.read(names[f"{info}/entry_points.txt"]).decode()
    assert (meta["Name"], meta["Version"]) == ("PyDejavu", version)
    extras = set(meta.get_all("Provides-Extra"))
    assert {"mysql", "postgres", "mic", "eval", "all"} <= extras
    requires = meta.get_all("Requires-Dist")
    for package in HEADER_BUILDS:
        assert any(r.startswith(package) and "extra ==" in r for r in requires), package
        assert any(r.startswith(package) and 'extra == "all"' in r for r in requires), package
    assert "dejavu = dejavu.cli:run" in scripts and "dejavu-eval = dejavu.evaluation.cli:run" in scripts


def test_the_version_is_written_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" in project["dynamic"] and "version" not in project
    setup = (ROOT / "setup.py").read_text()
    assert "version" not in setup and len(setup.splitlines()) < 10, "setup.py is a shim"
    version = re.search(r'__version__ = "([^"]+)"', (ROOT / "dejavu" / "version.py").read_text()).group(1)
    out = run_cli("--version")
    assert out.stdout.decode().split() == ["dejavu", version]


def test_requirements_install_without_database_client_headers(tmp_path: Path) -> None:
    """No requirement builds against MySQL, PostgreSQL or PortAudio headers; and pip resolves
    and prepares every one of them on a machine whose pkg-config and PATH know no client
    library (the control: mysqlclient itself fails to prepare there)."""
    assert not set(_requirements()) & set(HEADER_BUILDS)
    env = {**os.environ, "PKG_CONFIG_LIBDIR": str(tmp_path), "PKG_CONFIG_PATH": "",
           "PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    hidden = [p for p in ("/usr/bin/mysql_config", "/usr/bin/mariadb_config", "/usr/bin/pg_config") if os.path.exists(p)]
    if hidden:   # on PATH through /usr/bin: point PATH at a copy of /usr/bin without them instead
        bindir = tmp_path / "bin"
        bindir.mkdir()
        for name in os.listdir("/usr/bin"):
            if f"/usr/bin/{name}" not in hidden:
                (bindir / name).symlink_to(f"/usr/bin/{name}")
        env["PATH"] = f"{os.path.dirname(sys.executable)}:{bindir}:/bin"

    def dry_run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                               "--no-cache-dir", *args], capture_output=True, text=True, env=env, timeout=600)

    control = dry_run("mysqlclient")
    if "Could not fetch" in control.stderr or "NewConnectionError" in control.stderr:
        pytest.skip("PyPI is not reachable: pip cannot be tried")
    assert control.returncode != 0, "mysqlclient prepared without headers: the test machine proves nothing"
    out = dry_run("-r", str(ROOT / "requirements.txt"))
    assert out.returncode == 0, out.stderr[-2000:]


def test_mysql_without_its_driver_says_what_to_install(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['MySQLdb'] = None\n"
            "from dejavu.cli import main\n"
            "sys.exit(main(['--stats']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(ROOT),
                              "DEJAVU_DATABASE_URL": "mysql://u:p@127.0.0.1:3306/x"})
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "pip install 'PyDejavu[mysql]'" in out.stderr and "mysqlclient" in out.stderr
    assert "libmariadb-dev" in out.stderr
