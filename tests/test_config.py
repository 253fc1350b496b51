"""Configuration: every variable parsed once, errors name the variable and where to set it."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from adsync.sync.config import AccountSpec, Secret, load_settings
from adsync.sync.errors import ConfigError


def test_defaults_match_the_contract(tmp_path: Path) -> None:
    s = load_settings({}, cwd=tmp_path)
    assert s.oceanengine_api_base == "https://api.oceanengine.com"
    assert s.oceanengine_auth_url == "https://open.oceanengine.com/audit/oauth.html"
    assert s.feishu_domain == "https://open.feishu.cn"
    assert s.timezone == "Asia/Shanghai"
    assert s.daily_sync_at == time(7, 0)
    assert s.lookback_days == 3
    assert s.refresh_margin == 3600
    assert s.port == 8000
    assert s.db_url == "sqlite:///data/adsync.db"
    assert (s.table_roll, s.table_name, s.table_max_rows) == ("full", "本地推日报 {period}", 20000)


def test_dotenv_then_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OCEANENGINE_APP_ID=111\nADSYNC_LOOKBACK_DAYS=5\n")
    (tmp_path / "adsync.toml").write_text('[adsync]\nADSYNC_LOOKBACK_DAYS = "9"\nPORT = "9000"\n')
    s = load_settings({"OCEANENGINE_APP_ID": "222"}, cwd=tmp_path)
    assert s.oceanengine_app_id == "222"  # environment wins
    assert s.lookback_days == 5  # .env over adsync.toml
    assert s.port == 9000  # adsync.toml as the last layer


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("OCEANENGINE_APP_ID", "abc", "digits"),
        ("ADSYNC_DAILY_SYNC_AT", "7am", "HH:MM"),
        ("ADSYNC_TIMEZONE", "Mars/Base", "time zone"),
        ("ADSYNC_LOOKBACK_DAYS", "0", "at least 1"),
        ("ADSYNC_ACCOUNTS", "12:a,xx", "numeric ids"),
        ("FEISHU_REPORT_CHAT_IDS", "chat1", "oc_"),
        ("OCEANENGINE_API_BASE", "api.oceanengine.com", "http"),
        ("PORT", "99999", "port"),
        ("ADSYNC_TABLE_ROLL", "weekly", "month, quarter, year or full"),
        ("ADSYNC_TABLE_NAME", "本地推日报", "{period} once"),
        ("ADSYNC_TABLE_NAME", "日报 {period} {period}", "{period} once"),
        ("ADSYNC_TABLE_NAME", "日报/{period}", "cannot contain /"),
        ("ADSYNC_TABLE_NAME", "x" * 95 + "{period}", "at most 100"),
        ("ADSYNC_TABLE_MAX_ROWS", "0", "at least 1"),
    ],
)
def test_malformed_values_name_the_variable(
    tmp_path: Path, name: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: value}, cwd=tmp_path)
    assert name in str(err.value) and words in str(err.value)
    assert err.value.exit_code == 2


def test_malformed_secret_is_not_echoed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"FEISHU_ALERT_WEBHOOK_URL": "not-a-url-s3cr3tvalue"}, cwd=tmp_path)
    assert "s3cr3tvalue" not in str(err.value)


def test_missing_required_value_names_it_and_where(tmp_path: Path) -> None:
    s = load_settings({}, cwd=tmp_path)
    with pytest.raises(ConfigError) as err:
        s.require("OCEANENGINE_APP_ID")
    assert "OCEANENGINE_APP_ID is not set" in str(err.value)
    assert ".env" in str(err.value)


def test_secrets_are_masked_in_any_repr(tmp_path: Path) -> None:
    s = load_settings(
        {
            "OCEANENGINE_APP_SECRET": "oe-secret-value-123456",
            "FEISHU_APP_SECRET": "feishu-secret-value-789",
            "ADSYNC_DATABASE_URL": "postgresql://u:dbpassword123@h/db",
        },
        cwd=tmp_path,
    )
    text = repr(s) + str(s)
    for secret in ("oe-secret-value-123456", "feishu-secret-value-789", "dbpassword123"):
        assert secret not in text
    assert isinstance(s.oceanengine_app_secret, Secret)
    assert s.oceanengine_app_secret.reveal() == "oe-secret-value-123456"
    assert s.db_url.startswith("postgresql+psycopg://")


def test_accounts_list(tmp_path: Path) -> None:
    s = load_settings(
        {"ADSYNC_ACCOUNTS": "1835880409219083:菲象_27, 1835880409219084"}, cwd=tmp_path
    )
    assert s.accounts == (
        AccountSpec("1835880409219083", "菲象_27"),
        AccountSpec("1835880409219084", ""),
    )
