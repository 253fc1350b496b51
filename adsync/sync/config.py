"""Settings from the environment, a ``.env`` file, and an optional ``adsync.toml``.

Precedence: environment > ``.env`` (working directory, or ``ADSYNC_ENV_FILE``) > ``adsync.toml``
(``[adsync]`` table with the same variable names, or ``ADSYNC_CONFIG``). Every variable is
declared once, on the ``Settings`` field that holds it; a malformed value is an error naming the
variable and where to set it. Missing values are only errors where a command needs them
(``settings.require(...)``), so ``adsync sandbox`` runs with no configuration at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from adsync.sync.errors import ConfigError, mask


class Secret:
    """A string that never prints itself. ``reveal()`` is the only way to the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({mask(self._value)})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class AccountSpec:
    """One local-push account named in ``ADSYNC_ACCOUNTS`` (``id[:name]``)."""

    id: str
    name: str = ""


# -- parsers: raw text -> value, raising ValueError with a short reason ---------------------------


def _text(raw: str) -> str:
    return raw


def _secret(raw: str) -> Secret:
    return Secret(raw)


def _digits(raw: str) -> str:
    if not raw.isdigit():
        raise ValueError("expected digits only, like 1700000000000001")
    return raw


def _url(raw: str) -> str:
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ValueError("expected an http(s) URL")  # the variable's example follows
    return raw.rstrip("/")


def _secret_url(raw: str) -> Secret:
    return Secret(_url(raw))


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 1:
        raise ValueError("expected a number of at least 1")
    return value


def _non_negative_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number of seconds") from None
    if value < 0:
        raise ValueError("expected 0 or more")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number") from None
    if value <= 0:
        raise ValueError("expected a number above 0")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds, like 0.3") from None
    if not 0 <= value < float("inf"):  # also refuses nan
        raise ValueError("expected 0 or more")
    return value


# A card callback older than this many seconds is refused. The bound keeps the window shorter
# than the dedup claims' 12 hours (adsync.bot.worker.DEDUP_TTL; a test ties the two): a replay
# that arrives after its claim expired must already be stale.
CALLBACK_MAX_AGE_RANGE = (10, 3600)


def _callback_max_age(raw: str) -> int:
    low, high = CALLBACK_MAX_AGE_RANGE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number of seconds, like 300") from None
    if not low <= value <= high:
        raise ValueError(
            f"expected {low} to {high} seconds (it must stay far below the 12-hour replay "
            "memory, and Feishu sends a button press within a second)"
        )
    return value


def _minutes(raw: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in _list(raw))
    except ValueError:
        raise ValueError("expected minutes like 30,120") from None
    if any(v < 1 for v in values) or list(values) != sorted(values):
        raise ValueError("expected increasing minutes like 30,120")
    return values


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
    return level


def _port(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > 65535:
        raise ValueError("expected a port number 0-65535")
    return int(raw)


def _feishu_app_id(raw: str) -> str:
    # Every Feishu/Lark app id starts with "cli_" (the developer console shows it so).
    if not raw.startswith("cli_") or len(raw) < 8:
        raise ValueError("expected the Feishu app id, which starts with cli_")
    return raw


def _table_id(raw: str) -> str:
    # Bitable table ids start with "tbl" (the table_id=tbl… part of the Base's URL).
    if not raw.startswith("tbl"):
        raise ValueError("expected a table id, which starts with tbl")
    return raw


def _hhmm(raw: str) -> time:
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", raw.strip())
    if not match:
        raise ValueError("expected HH:MM, like 07:00")
    return time(int(match.group(1)), int(match.group(2)))


def _timezone(raw: str) -> str:
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone, like Asia/Shanghai") from None
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _chat_ids(raw: str) -> tuple[str, ...]:
    items = _list(raw)
    bad = [i for i in items if not i.startswith("oc_")]
    if bad:
        raise ValueError(f"chat ids start with oc_ (got {bad[0]!r})")
    return items


def _accounts(raw: str) -> tuple[AccountSpec, ...]:
    specs = []
    for item in _list(raw):
        account_id, _, name = item.partition(":")
        account_id = account_id.strip()
        if not account_id.isdigit():
            raise ValueError(f"expected id[:name],... with numeric ids (got {item!r})")
        specs.append(AccountSpec(account_id, name.strip()))
    return tuple(specs)


def _field_map(raw: str) -> tuple[tuple[str, str], ...]:
    from adsync.sync.columns import parse_field_map

    return parse_field_map(raw)


TABLE_ROLLS = ("month", "quarter", "year", "full")


def _table_roll(raw: str) -> str:
    value = raw.strip().lower()
    if value not in TABLE_ROLLS:
        raise ValueError("expected month, quarter, year or full")
    return value


def _table_name(raw: str) -> str:
    # Feishu table names: 1-100 characters, trimmed, no / \ ? * : [ ] (app-table create/patch).
    # "{period}" is the only placeholder: every rolled table needs a name of its own.
    rest = raw.replace("{period}", "")
    if raw.count("{period}") != 1 or "{" in rest or "}" in rest:
        raise ValueError("expected a name with {period} once, like 本地推日报 {period}")
    bad = sorted(set(re.findall(r"[\[\]:\\/?*]", raw)))
    if bad:
        raise ValueError(f"a Feishu table name cannot contain {' '.join(bad)}")
    if len(raw.replace("{period}", "2026-Q1 #99").strip()) > 100:
        raise ValueError("a Feishu table name has at most 100 characters")
    return raw.strip()


# The database drivers adsync installs: SQLite (the standard library) and psycopg 3.
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql", "postgres", "postgresql+psycopg")
_DATABASE_FORMS = "sqlite:///path/to/adsync.db or postgresql://user:password@host:5432/db"


def _database_url(raw: str) -> Secret:
    scheme, sep, _rest = raw.partition("://")
    if not sep:
        raise ValueError(f"expected a database URL: {_DATABASE_FORMS}")
    if scheme.lower() not in DATABASE_SCHEMES:
        shown = scheme if re.fullmatch(r"[A-Za-z0-9+._-]{1,30}", scheme) else "an unknown"
        raise ValueError(
            f"{shown}:// is not supported; adsync stores its data in SQLite or PostgreSQL: "
            f"{_DATABASE_FORMS}"
        )
    # Hand psycopg 3 to SQLAlchemy for the plain URL forms people copy from hosting dashboards.
    for prefix in ("postgres://", "postgresql://"):
        if raw.startswith(prefix):
            raw = "postgresql+psycopg://" + raw[len(prefix) :]
    return Secret(raw)


def var(
    name: str,
    parse: Callable[[str], Any] = _text,
    default: Any = None,
    doc: str = "",
    example: str = "",
) -> Any:
    """Declare a settings field backed by the variable ``name``. ``example``: a well-formed
    value, shown when the value is malformed (the default, when there is one, otherwise)."""
    return field(
        default=default,
        metadata={"env": name, "parse": parse, "doc": doc, "example": example},
    )


@dataclass(frozen=True)
class Settings:
    oceanengine_app_id: str | None = var("OCEANENGINE_APP_ID", _digits, doc="Ocean Engine app id")
    oceanengine_app_secret: Secret | None = var("OCEANENGINE_APP_SECRET", _secret)
    oceanengine_api_base: str = var("OCEANENGINE_API_BASE", _url, "https://api.oceanengine.com")
    oceanengine_auth_url: str = var(
        "OCEANENGINE_AUTH_URL", _url, "https://open.oceanengine.com/audit/oauth.html"
    )
    oceanengine_redirect_uri: str | None = var(
        "OCEANENGINE_REDIRECT_URI",
        _url,
        example="https://ads.example.com/oauth/oceanengine/callback",
    )
    accounts: tuple[AccountSpec, ...] = var(
        "ADSYNC_ACCOUNTS", _accounts, (), example="1835880409219083:门店A,1835880409219084"
    )
    feishu_app_id: str | None = var("FEISHU_APP_ID", _feishu_app_id, example="cli_a1b2c3d4e5f6a7b8")
    feishu_app_secret: Secret | None = var("FEISHU_APP_SECRET", _secret)
    feishu_domain: str = var("FEISHU_DOMAIN", _url, "https://open.feishu.cn")
    feishu_encrypt_key: Secret | None = var("FEISHU_ENCRYPT_KEY", _secret)
    feishu_verification_token: Secret | None = var("FEISHU_VERIFICATION_TOKEN", _secret)
    feishu_bitable_app_token: str | None = var("FEISHU_BITABLE_APP_TOKEN")
    feishu_bitable_table_id: str | None = var(
        "FEISHU_BITABLE_TABLE_ID", _table_id, example="tblAbCdEf12345678"
    )
    feishu_report_chat_ids: tuple[str, ...] = var(
        "FEISHU_REPORT_CHAT_IDS", _chat_ids, (), example="oc_a0553eda9014c201e6969b478895c230"
    )
    feishu_alert_webhook_url: Secret | None = var(
        "FEISHU_ALERT_WEBHOOK_URL",
        _secret_url,
        example="https://open.feishu.cn/open-apis/bot/v2/hook/<hook id>",
    )
    feishu_alert_webhook_secret: Secret | None = var("FEISHU_ALERT_WEBHOOK_SECRET", _secret)
    admins: tuple[str, ...] = var("ADSYNC_ADMINS", _list, ())
    allowed_chat_ids: tuple[str, ...] = var(
        "ADSYNC_ALLOWED_CHAT_IDS", _chat_ids, (), example="oc_a0553eda9014c201e6969b478895c230"
    )
    database_url: Secret | None = var(
        "ADSYNC_DATABASE_URL", _database_url, example="postgresql://adsync:…@127.0.0.1:5432/adsync"
    )
    data_dir: Path = var("ADSYNC_DATA_DIR", Path, Path("data"))
    timezone: str = var("ADSYNC_TIMEZONE", _timezone, "Asia/Shanghai")
    daily_sync_at: time = var("ADSYNC_DAILY_SYNC_AT", _hhmm, time(7, 0))
    lookback_days: int = var("ADSYNC_LOOKBACK_DAYS", _positive_int, 3)
    refresh_margin: int = var("ADSYNC_REFRESH_MARGIN", _non_negative_int, 3600)
    port: int = var("PORT", _port, 8000)
    # Extensions beyond the contract.
    bitable_fields: tuple[tuple[str, str], ...] = var(
        "ADSYNC_BITABLE_FIELDS", _field_map, (), "map default field names onto an existing table"
    )
    rate_limit: float = var(
        "ADSYNC_RATE_LIMIT", _positive_float, 5.0, "Ocean Engine requests per second"
    )
    concurrency: int = var("ADSYNC_CONCURRENCY", _positive_int, 4, "accounts fetched at once")
    http_timeout: float = var("ADSYNC_HTTP_TIMEOUT", _positive_float, 20.0, "seconds per call")
    db_wait: float = var(
        "ADSYNC_DB_WAIT",
        _positive_float,
        2.0,
        "seconds a database call waits for a lock or a lost connection before it fails "
        "(a card action must be answered within 3 s)",
    )
    settle_at: time = var("ADSYNC_SETTLE_AT", _hhmm, time(10, 30), "re-sync yesterday when final")
    settle_threshold_pct: float = var(
        "ADSYNC_SETTLE_THRESHOLD_PCT", _positive_float, 1.0, "settle re-sync speaks above this"
    )
    spend_alert_pct: float = var(
        "ADSYNC_SPEND_ALERT_PCT", _positive_float, 50.0, "spend vs 7-day average alert"
    )
    retry_after: tuple[int, ...] = var(
        "ADSYNC_RETRY_AFTER", _minutes, (30, 120), "minutes after the daily run to retry"
    )
    retry_base_delay: float = var(
        "ADSYNC_RETRY_BASE_DELAY", _positive_float, 0.5, "first backoff step, seconds"
    )
    bitable_write_gap: float = var(
        "ADSYNC_BITABLE_WRITE_GAP",
        _non_negative_float,
        0.3,
        "seconds between consecutive Bitable writes (Feishu advises spacing them)",
    )
    table_roll: str = var(
        "ADSYNC_TABLE_ROLL",
        _table_roll,
        "full",
        "month, quarter, year or full: when a new table starts",
    )
    table_name: str = var(
        "ADSYNC_TABLE_NAME", _table_name, "本地推日报 {period}", "name template of rolled tables"
    )
    table_max_rows: int = var(
        "ADSYNC_TABLE_MAX_ROWS", _positive_int, 20000, "the plan's rows per table"
    )
    bitable_url: str | None = var(
        "ADSYNC_BITABLE_URL",
        _url,
        doc="the Base's address as the browser shows it (links in messages)",
    )
    callback_max_age: int = var(
        "ADSYNC_CALLBACK_MAX_AGE",
        _callback_max_age,
        300,
        "seconds a card button press may take to arrive; older ones (replays) are refused",
    )
    log_level: str = var("ADSYNC_LOG_LEVEL", _log_level, "INFO")
    log_file: Path | None = var("ADSYNC_LOG_FILE", Path, doc="also log to this file")
    source: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL in effect (a secret: it may carry a password)."""
        if self.database_url is not None:
            return self.database_url.reveal()
        return f"sqlite:///{self.data_dir / 'adsync.db'}"

    # Names in .env or adsync.toml that look like a mistyped setting (see ``load_settings``):
    # `adsync doctor` lists them, since a typo there reads as "not set" everywhere else.
    unknown: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def require(self, *env_names: str) -> None:
        """Raise ConfigError naming every one of ``env_names`` that has no value."""
        by_env = {f.metadata["env"]: f.name for f in fields(self) if "env" in f.metadata}
        missing = [name for name in env_names if getattr(self, by_env[name]) in (None, "", ())]
        if not missing:
            return
        names = " and ".join(
            [", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing
        )
        verb = "is" if len(missing) == 1 else "are"
        raise ConfigError(
            f"{names} {verb} not set",
            hint=f"set {', '.join(missing)} in the environment or in "
            f"{self.source.get('.env', '.env')} (.env.example lists every setting)",
        )

    def with_overrides(self, **values: Any) -> Settings:
        return replace(self, **values)


def settings_fields() -> list[tuple[str, str, str]]:
    """(variable, default, doc) for every declared variable: documentation and `adsync doctor`."""
    out = []
    for f in fields(Settings):
        if "env" in f.metadata:
            out.append(
                (f.metadata["env"], "" if f.default is None else str(f.default), f.metadata["doc"])
            )
    return out


# Variables that say where the configuration is: read from the real environment only.
LOCATORS = ("ADSYNC_ENV_FILE", "ADSYNC_CONFIG")
_PREFIXES = ("ADSYNC_", "OCEANENGINE_", "FEISHU_")


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def _read_toml(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    table = data.get("adsync", data)
    return {str(k).upper(): str(v) for k, v in table.items() if not isinstance(v, dict)}


def _example(f: Any) -> str:
    example = f.metadata.get("example") or ""
    if not example and f.default not in (None, (), ""):
        default = f.default
        example = default.strftime("%H:%M") if isinstance(default, time) else str(default)
    return example


def _problem(f: Any, raw: str, where: str, reason: str) -> str:
    name = f.metadata["env"]
    hidden = f.metadata["parse"] in (_secret, _secret_url, _database_url)
    example = _example(f)
    if example and "like " not in reason and not hidden:
        reason += f", like {example}"
    shown = "(hidden)" if hidden else repr(raw)
    return f"{name} is malformed: {reason} (got {shown} from {where})"


def _unknown_names(layers: list[tuple[str, dict[str, str]]], known: set[str]) -> list[str]:
    """Names in .env / adsync.toml that adsync does not read: a typo of a known one, or (in
    adsync.toml's [adsync] table, which is adsync's alone) anything."""
    import difflib

    notes = []
    for origin, layer in layers:
        for name, value in layer.items():
            if name in known or name in LOCATORS or not value.strip():
                continue  # an empty line (.env.example's blanks) sets nothing
            near = difflib.get_close_matches(name, sorted(known), 1, 0.8)
            if near:
                notes.append(f"{name} in {origin} is not a setting; did you mean {near[0]}?")
            elif origin.endswith(".toml") or name.startswith("ADSYNC_"):
                notes.append(f"{name} in {origin} is not a setting adsync reads")
    return notes


def load_settings(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
    """Read every variable; raise one ConfigError listing every malformed one (each with its
    name, where its value came from and the form expected), so a new operator fixes them in
    one pass rather than one per run."""
    env = dict(os.environ if environ is None else environ)
    base = Path.cwd() if cwd is None else cwd
    problems: list[str] = []
    paths = {}
    for locator, default in (
        ("ADSYNC_ENV_FILE", base / ".env"),
        ("ADSYNC_CONFIG", base / "adsync.toml"),
    ):
        pointed = env.get(locator, "").strip()
        paths[locator] = Path(pointed) if pointed else default
        if pointed and not Path(pointed).is_file():
            problems.append(
                f"{locator} points to {pointed}, which "
                + ("is not a file" if Path(pointed).exists() else "does not exist")
            )
    dotenv_path, toml_path = paths["ADSYNC_ENV_FILE"], paths["ADSYNC_CONFIG"]
    try:
        toml_layer = _read_toml(toml_path)
    except ValueError as exc:
        problems.append(str(exc))
        toml_layer = {}
    files = [(str(toml_path), toml_layer), (str(dotenv_path), _read_dotenv(dotenv_path))]
    layers = [*files, ("the environment", env)]
    values: dict[str, Any] = {}
    known = set()
    for f in fields(Settings):
        if "env" not in f.metadata:
            continue
        name = f.metadata["env"]
        known.add(name)
        raw, where = None, ""
        for origin, layer in layers:
            if layer.get(name, "").strip() != "":
                raw, where = layer[name].strip(), origin
        if raw is None:
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            problems.append(_problem(f, raw, where, str(exc)))
    if problems:
        first = problems[0] if len(problems) == 1 else f"{len(problems)} settings are wrong:"
        lines = [first] if len(problems) == 1 else [first, *(f"  {p}" for p in problems)]
        hint = (
            f"correct {'it' if len(problems) == 1 else 'them'} where set (the environment wins "
            f"over {dotenv_path}, which wins over {toml_path}); .env.example shows every setting"
        )
        if all(p.startswith(LOCATORS) for p in problems):
            hint = "point it at an existing file, or unset it to read ./.env and ./adsync.toml"
        raise ConfigError("\n".join(lines), hint=hint)
    values["source"] = {".env": str(dotenv_path), "toml": str(toml_path)}
    values["unknown"] = tuple(_unknown_names(files, known))
    return Settings(**values)
