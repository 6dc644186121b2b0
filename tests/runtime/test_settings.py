from __future__ import annotations

from pathlib import Path

import pytest

from runtime.settings import SettingsError, load_settings


def test_environment_overrides_file_and_types_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text('http_port = 9000\nlog_level = "DEBUG"\n')
    s = load_settings(
        env={
            "SWITCHBOARD_CONFIG": str(path),
            "SWITCHBOARD_HTTP_PORT": "9100",
            "SWITCHBOARD_SMTP_STARTTLS": "true",
        }
    )
    assert (s.http_port, s.log_level, s.smtp_starttls) == (9100, "DEBUG", True)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SWITCHBOARD_HTTP_PORT": "eighty"}, "SWITCHBOARD_HTTP_PORT"),
        ({"SWITCHBOARD_HTTP_PORT": "70000"}, "SWITCHBOARD_HTTP_PORT"),
        ({"SWITCHBOARD_DB_POOL_MAX": "0"}, "db_pool_max"),
        ({"SWITCHBOARD_MASTER_KEY": "abcd"}, "master_key"),
        ({"SWITCHBOARD_NO_SUCH_THING": "1"}, "SWITCHBOARD_NO_SUCH_THING"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env=env)


def test_an_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("htp_port = 1\n")
    with pytest.raises(SettingsError, match="htp_port"):
        load_settings(env={"SWITCHBOARD_CONFIG": str(path)})
