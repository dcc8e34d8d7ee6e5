"""Configuration: the original's shape, defaults, overrides and clear errors."""
from __future__ import annotations

import json

import pytest

from dejavu.config import load_config, read_config_file
from dejavu.exceptions import ConfigError


def test_defaults_to_embedded_sqlite():
    cfg = load_config(None, environ={})
    assert cfg.database_type == "sqlite" and cfg.database["path"] == "dejavu.db"
    assert load_config({"database": {"path": "x.db"}}, environ={}).database_type == "sqlite"


def test_missing_type_with_a_server_means_mysql_as_in_the_original():
    cfg = load_config({"database": {"host": "127.0.0.1", "user": "root", "password": "p", "database": "dejavu"}},
                      environ={})
    assert cfg.database_type == "mysql"


def test_dsn_and_environment_overrides():
    cfg = load_config({"database": "postgresql://u:p%40ss@db.example:5433/fp"}, environ={})
    assert cfg.database_type == "postgres"
    assert dict(cfg.database) == {"host": "db.example", "port": 5433, "user": "u", "password": "p@ss", "database": "fp"}
    cfg = load_config({"database_type": "postgres", "database": {"host": "h", "user": "u", "database": "d"}},
                      environ={"DEJAVU_DATABASE_PASSWORD": "secret"})
    assert cfg.database["password"] == "secret"
    cfg = load_config({}, environ={"DEJAVU_DATABASE_URL": "mysql://a:b@h/d"})
    assert cfg.database_type == "mysql" and cfg.database["user"] == "a"
    assert load_config({}, environ={"DEJAVU_DATABASE_URL": "sqlite:///tmp/x.db"}).database["path"] == "tmp/x.db"


def test_fingerprint_limit_and_overrides():
    assert load_config({"fingerprint_limit": -1}, environ={}).fingerprint_limit is None
    assert load_config({"fingerprint_limit": 30}, environ={}).fingerprint_limit == 30
    cfg = load_config({"fingerprint": {"fan_value": 7}, "matching": {"topn": 5}}, environ={})
    assert cfg.fingerprint.fan_value == 7 and cfg.matching.topn == 5


@pytest.mark.parametrize("raw, key", [
    ({"database_type": "oracle"}, "oracle"),
    ({"fingerprint": {"fan_valu": 3}}, "fingerprint.fan_valu"),
    ({"fingerprint": {"fan_value": "many"}}, "fingerprint.fan_value"),
    ({"fingerprint": {"window_size": 1000}}, "fingerprint.window_size"),
    ({"matching": {"topn": 0}}, "matching.topn"),
    ({"fingerprint_limit": "ten"}, "fingerprint_limit"),
    ({"database": 5}, "database"),
])
def test_bad_values_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(raw, environ={})


def test_config_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"database_type": "sqlite",')
    with pytest.raises(ConfigError, match=r"bad\.json: invalid JSON at line 1"):
        read_config_file(str(bad))
    with pytest.raises(ConfigError, match="cannot read configuration"):
        read_config_file(str(tmp_path / "missing.json"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"database_type": "sqlite", "database": {"path": "fp.db"}}))
    assert read_config_file(str(good)).database["path"] == "fp.db"
