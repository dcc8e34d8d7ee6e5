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
    with pytest.raises(ConfigError, match=r"bad\.json': invalid JSON at line 1"):
        read_config_file(str(bad))
    with pytest.raises(ConfigError, match="cannot read configuration"):
        read_config_file(str(tmp_path / "missing.json"))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"database_type": "sqlite", "database": {"path": "fp.db"}}))
    assert read_config_file(str(good)).database["path"] == "fp.db"


@pytest.mark.parametrize("raw, key, value", [
    ({"fingerprint": {"amp_min": float("nan")}}, "fingerprint.amp_min", "nan"),
    ({"fingerprint": {"fan_value": 1e9}}, "fingerprint.fan_value", "1000000000.0"),
    ({"fingerprint": {"window_size": 2**40}}, "fingerprint.window_size", "1099511627776"),
    ({"fingerprint": {"neighborhood_freq": 10**9}}, "fingerprint.neighborhood_freq", "1000000000"),
    ({"fingerprint": {"freq_max_hz": float("inf")}}, "fingerprint.freq_max_hz", "inf"),
    ({"fingerprint": {"peaks_per_second": 1e300}}, "fingerprint.peaks_per_second", "1e+300"),
    ({"fingerprint_limit": 1e308}, "fingerprint_limit", "1e+308"),
    ({"matching": {"speed_search_max_seconds": float("inf")}}, "matching.speed_search_max_seconds", "inf"),
    ({"matching": {"speed_factors": [1.0, float("nan")]}}, "matching.speed_factors", "nan"),
    ({"monitor": {"min_hashes": 10**12}}, "monitor.min_hashes", "1000000000000"),
    ({"microphone": {"chunk_size": -1}}, "microphone.chunk_size", "-1"),
])
def test_every_number_has_a_finite_range_named_in_the_message(raw, key, value):
    from dejavu.config import RANGES

    with pytest.raises(ConfigError) as err:
        load_config(raw, environ={})
    message = str(err.value)
    assert message.startswith(key + " ") and value in message and RANGES[key].describe() in message
    assert "\n" not in message


def test_every_numeric_setting_has_a_range_and_the_readme_lists_it():
    """A new numeric setting without a range (or a range the README does not state) fails here."""
    from dataclasses import fields

    from dejavu.config import RANGES, FingerprintConfig, MatchingConfig, MicrophoneConfig, MonitorConfig
    from conftest import ROOT

    for name, cls in (("fingerprint", FingerprintConfig), ("matching", MatchingConfig),
                      ("microphone", MicrophoneConfig), ("monitor", MonitorConfig)):
        for f in fields(cls):
            value = getattr(cls(), f.name)
            numeric = isinstance(value, (int, float, tuple)) and not isinstance(value, bool)
            assert not numeric or f"{name}.{f.name}" in RANGES, f"{name}.{f.name} has no range"
    readme = (ROOT / "README.md").read_text()
    for key, rng in RANGES.items():
        lo, hi = rng.describe().split(" in ")[1].split(" ")[0].split("..")
        assert f"`{key.rpartition('.')[2]}` {lo}..{hi}" in readme, key


def test_defaults_and_the_range_edges_load():
    from dejavu.config import RANGES

    load_config({}, environ={})
    load_config({"fingerprint": {"window_size": 65536, "hop_size": 65536, "amp_min": -200,
                                 "peaks_per_second": 500, "freq_max_hz": 24000},
                 "matching": {"row_budget": 0, "speed_factors": [0.8, 1.25]}, "fingerprint_limit": 1e6},
                environ={})
    assert RANGES["fingerprint.window_size"].lo == 64


def test_bad_database_url_is_one_clear_line_without_the_password():
    for url in ("postgresql://:@:::/", "postgresql://u:hunter2@host:99999/db"):
        with pytest.raises(ConfigError, match="database URL is not valid") as err:
            load_config({"database": url}, environ={})
        assert "hunter2" not in str(err.value)


def test_unknown_top_level_keys_warn_with_the_closest_known_key(caplog):
    from dejavu.config import KNOWN_KEYS

    assert "server" in KNOWN_KEYS
    with caplog.at_level("WARNING", logger="dejavu"):
        cfg = load_config({"fingerprint_limt": 30, "colour": "blue"}, environ={})
    assert cfg.fingerprint_limit is None and cfg.raw["colour"] == "blue"
    text = caplog.text
    assert "'fingerprint_limt'" in text and "did you mean 'fingerprint_limit'" in text
    assert "'colour'" in text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dejavu"):
        load_config({"server": {}}, environ={})
    assert caplog.text == ""


@pytest.mark.parametrize("key", ["databse_type", "databse", "dtaabase", "databases", "Database"])
def test_a_typo_of_the_database_keys_is_refused(key):
    with pytest.raises(ConfigError, match=f"unknown key '{key}': did you mean 'database"):
        load_config({key: {"path": "elsewhere.db"} if "type" not in key else "sqlite"}, environ={})
