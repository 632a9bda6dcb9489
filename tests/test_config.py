"""Config files: every error reported with its location, before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud.config import CollectorConfig
from edge.config import EdgeConfig
from parkgate.settings import ConfigError, MqttSettings, load_config

GOOD_EDGE = """
gate_id = "L01-in"
lot_id = "L01"
direction = "entry"
[camera]
kind = "files"
path = "/tmp"
"""


def write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_good_edge_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(EdgeConfig, write(tmp_path, GOOD_EDGE))
    assert cfg.gate_id == "L01-in" and cfg.ocr.engine == "rapidocr" and cfg.mqtt.port == 1883


def test_every_error_is_listed_with_its_location(tmp_path: Path) -> None:
    text = GOOD_EDGE.replace('"entry"', '"sideways"').replace(
        'kind = "files"', 'kind = "files"\ninterval_s = -1'
    )
    text += '\n[mqtt]\nport = 70000\ncolour = "red"\n'
    with pytest.raises(ConfigError) as err:
        load_config(EdgeConfig, write(tmp_path, text))
    problems = "\n".join(err.value.problems)
    assert len(err.value.problems) == 4, problems
    for location in ("direction", "camera.files.interval_s", "mqtt.port", "mqtt.colour"):
        assert location in problems


def test_toml_syntax_error_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TOML syntax: .*line 2"):
        load_config(EdgeConfig, write(tmp_path, 'gate_id = "x"\nlot_id = \n'))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(EdgeConfig, tmp_path / "absent.toml")


def test_collector_checks_references(tmp_path: Path) -> None:
    text = """
[[lots]]
id = "L1"
name = "A"
capacity = 10
[[screens]]
id = "S1"
name = "sign"
lots = [{ lot_id = "L9" }]
"""
    with pytest.raises(ConfigError, match="unknown lot"):
        load_config(CollectorConfig, write(tmp_path, text))


def test_password_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = MqttSettings(username="gate", password_env="PG_TEST_SECRET")
    monkeypatch.delenv("PG_TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="PG_TEST_SECRET is not set"):
        settings.password()
    monkeypatch.setenv("PG_TEST_SECRET", "s3cret")
    assert settings.password() == "s3cret"


@pytest.mark.parametrize("service", ["edge", "collector", "dashboard"])
def test_service_with_bad_config_exits_before_starting(tmp_path: Path, service: str) -> None:
    bad = write(tmp_path, 'unknown_key = 1\n[mqtt]\nport = "x"\n')
    run = subprocess.run(
        [sys.executable, "-m", "parkgate", service, "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 78, run.stderr
    assert "unknown_key" in run.stderr and "mqtt.port" in run.stderr
    assert run.stdout == ""
