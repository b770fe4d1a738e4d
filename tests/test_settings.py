"""Settings: typed, from environment and YAML, and bad values named at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from fwcore.settings import SettingsError, load_settings, mqtt_parts


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """FIELDWATCH_* variables set the matching fields, with types converted."""
    monkeypatch.setenv("FIELDWATCH_API_PORT", "9001")
    monkeypatch.setenv("FIELDWATCH_MQTT_URL", "mqtt://user:pw@broker.example:1884")
    s = load_settings()
    assert s.api_port == 9001
    assert mqtt_parts(s.mqtt_url) == {
        "host": "broker.example",
        "port": 1884,
        "username": "user",
        "password": "pw",
        "tls": False,
    }


@pytest.mark.parametrize(
    ("key", "value", "expected_form"),
    [
        ("FIELDWATCH_DATABASE_URL", "mysql://x/y", "postgresql://"),
        ("FIELDWATCH_MQTT_URL", "http://broker", "mqtt://"),
        ("FIELDWATCH_API_PORT", "eighty", "1-65535"),
        ("FIELDWATCH_MQTT_PROTOCOL", "4", '"5" or "3.1.1"'),
        ("FIELDWATCH_LOG_LEVEL", "LOUD", "DEBUG"),
    ],
)
def test_bad_setting_names_key_and_form(
    monkeypatch: pytest.MonkeyPatch, key: str, value: str, expected_form: str
) -> None:
    """A bad value fails with a message naming the variable and the accepted form."""
    monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert key in str(err.value)
    assert expected_form in str(err.value)


def test_yaml_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FIELDWATCH_CONFIG names a YAML file of settings; the environment still wins over it."""
    cfg = tmp_path / "fw.yaml"
    cfg.write_text("api_port: 8123\nretention_days: 30\n")
    monkeypatch.setenv("FIELDWATCH_CONFIG", str(cfg))
    monkeypatch.setenv("FIELDWATCH_RETENTION_DAYS", "7")
    s = load_settings()
    assert (s.api_port, s.retention_days) == (8123, 7)


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A FIELDWATCH_CONFIG that does not exist is reported with its path."""
    monkeypatch.setenv("FIELDWATCH_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(SettingsError, match=r"nope\.yaml"):
        load_settings()


def test_two_deployment_names_give_different_ingest_client_ids_and_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two deployments on one broker derive distinct ingest client ids and share groups from their names."""
    for key in ("FIELDWATCH_INGEST_CLIENT_ID", "FIELDWATCH_INGEST_SHARE_GROUP", "FIELDWATCH_DEPLOYMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    north = load_settings(deployment_name="plant-north")
    south = load_settings(deployment_name="plant-south")
    assert north.ingest_client_id != south.ingest_client_id
    assert north.ingest_share_group != south.ingest_share_group
    assert "plant-north" in north.ingest_client_id and "plant-north" in north.ingest_share_group
    # Unnamed, the host names the deployment; an explicit client id still wins.
    assert load_settings().deployment_name and load_settings().ingest_client_id != "fieldwatch-ingest-1"
    assert load_settings(ingest_client_id="mine", deployment_name="x").ingest_client_id == "mine"


def test_deployment_name_refuses_characters_mqtt_topics_reserve() -> None:
    """A deployment name with '/', '+' or '#' (which would break the share group) is refused, named."""
    with pytest.raises(SettingsError, match="FIELDWATCH_DEPLOYMENT_NAME"):
        load_settings(deployment_name="plant/north")
