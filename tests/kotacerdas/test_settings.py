from kotacerdas.settings import DEFAULT_INFLUX_PORT, DEFAULT_MQTT_PORT, load_settings


def test_defaults_point_at_the_local_stack(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.mqtt.port == DEFAULT_MQTT_PORT and s.influx.url.endswith(str(DEFAULT_INFLUX_PORT))


def test_env_overrides_nested_and_toml_file(monkeypatch, tmp_path):
    cfg = tmp_path / "kc.toml"
    cfg.write_text('city = "cirebon"\n[mqtt]\nport = 1999\n[influx]\ndatabase = "fromfile"\n')
    monkeypatch.setenv("KC_CONFIG", str(cfg))
    monkeypatch.setenv("KC_INFLUX__DATABASE", "fromenv")
    s = load_settings()
    assert s.city == "cirebon" and s.mqtt.port == 1999
    assert s.influx.database == "fromenv"  # env beats file
    assert load_settings(city="depok").city == "depok"  # explicit beats env


def test_secrets_are_not_printed(monkeypatch):
    monkeypatch.setenv("KC_INFLUX__PASSWORD", "hunter2")
    s = load_settings()
    assert s.influx.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.model_dump())
