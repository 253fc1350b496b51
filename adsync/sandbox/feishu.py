"""A faithful simulator of the Feishu Open Platform APIs adsync uses.

It speaks the exact request/response shapes of lark-oapi 1.7.5 (paths, query parameters,
envelopes) so the real SDK client can be pointed at it with ``.domain(SANDBOX_URL)``, and it
is strict wherever the platform is strict (see /work/shared/reference/feishu.md): per-call and
per-table limits, field-name lookup, value conversion by field type, filter grammar,
``client_token`` idempotency, serial writes per table (1254291), IM ``uuid`` dedup, message
size limits on the raw request body, the IM rate limits (``IM_LIMITS``), card JSON 2.0 rules
(``adsync.sandbox.cards``), custom-bot signatures.

Simulated (all under ``/open-apis``):
  POST  /auth/v3/tenant_access_token/internal
  GET   /bitable/v1/apps/:app_token                      (app meta, incl. time_zone)
  GET   /bitable/v1/apps/:app_token/tables                  POST (create, with fields)
  POST  /bitable/v1/apps/:app_token/tables/batch_create | batch_delete
  DELETE /bitable/v1/apps/:app_token/tables/:table_id
  GET   /bitable/v1/apps/:app_token/tables/:table_id/fields       POST (create)
  PUT   /bitable/v1/apps/:app_token/tables/:table_id/fields/:field_id
  POST  /bitable/v1/apps/:app_token/tables/:table_id/records/search
  POST  .../records/batch_create | batch_update | batch_delete
  GET   .../records  and  .../records/:record_id
  GET   /bitable/v1/apps/:app_token/tables/:table_id/views        POST (create)
  GET   .../views/:view_id   PATCH (name, filter_info, hidden_fields)   DELETE
  POST  /im/v1/messages?receive_id_type=...
  POST  /im/v1/files                                   (upload a file: multipart; -> file_key)
  GET   /im/v1/chats/:chat_id/members/is_in_chat         (is the bot in this chat?)
  POST  /im/v1/messages/:message_id/reply
  PATCH /im/v1/messages/:message_id
  POST  /interactive/v1/card/update                      (delayed card update)
  POST  /bot/v2/hook/:hook_id                            (custom bot, no tenant token)
  GET   /bot/v3/info                                     (the bot's own identity)
  GET   /im/v1/chats/:chat_id                            (chat info: chat_mode p2p/group)

Control routes (JSON, no auth, no faults) under ``/_sandbox/feishu``:
  GET  /messages?chat_id=            every IM message with parsed content and versions (a file
                                     message also names its file: name, type, size)
  GET  /files/<file_key>             an uploaded file's bytes (X-File-Name, X-File-Type headers)
  GET  /tables/<app_token>/<table_id> fields + all records in write format
  DELETE /tables/<app_token>/<table_id>  a person deletes the table in the Base
  GET  /tables/<app_token>           the Base's tables: {tables: [{table_id, name, records}]}
  POST /tables                       create/replace a table (layout + records; "max_rows":
                                     this table's own row limit, else the max_rows option)
  GET  /views/<app_token>/<table_id>  every view of a table, with its filter
  POST /views/<app_token>/<table_id>  a person makes a view {view_name, view_type?,
                                     filter?: {field_name: value}} (a single "is" each)
  PATCH /views/<app_token>/<table_id>/<view_id>   a person renames it {view_name}
  DELETE /views/<app_token>/<table_id>/<view_id>  a person deletes it
  POST /chats                        {chat_id, name?, bot_member, chat_mode?: group|topic|p2p, dissolved?}
  POST /hooks                        {hook_id?, secret?} -> {hook_id, path, url}
  GET  /hooks/<hook_id>/messages
  POST /card_token                   {message_id} -> {token}
  POST /revoke_tokens                every tenant token becomes invalid (99991663)

Known approximations (codes the notes do not pin down): unknown field id on update 1254044,
malformed filter/sort 1254018, invalid query parameter 99992402, a batch_delete of tables naming
an unknown table 1254041 (nothing deleted), card-update token errors
200810, custom-bot malformed/oversized body 9499, patching a non-card message 230001, patching
one message more than 5 times a second 230020, 11232/11233 as HTTP 400; card sub-codes the
docs do not name are 200621 (``adsync.sandbox.cards`` says which). File upload: a bad or missing
form field 234001, a file over 30 MB 234006, an empty file 234010; a file message naming a
file_key nobody uploaded 230001 (the notes give the limits, not these codes).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import random
import re
import secrets
import string
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Flask, Response, request

from adsync.sandbox.bitable_views import (
    DEFAULT_VIEW_NAME,
    MAX_VIEW_PAGE,
    MAX_VIEWS,
    View,
    ViewProblem,
    check_filter_info,
    check_hidden_fields,
    check_view_name,
    check_view_type,
)
from adsync.sandbox.cards import validate_card
from adsync.sandbox.faults import Fault, FaultInjector
from adsync.sandbox.ratelimit import Window, reset_header

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

TEXT, NUMBER, SINGLE_SELECT, MULTI_SELECT, DATE, CHECKBOX = 1, 2, 3, 4, 5, 7
PERSON, PHONE, URL, ATTACHMENT, LINK, LOOKUP, FORMULA, DUPLEX_LINK = 11, 13, 15, 17, 18, 19, 20, 21
LOCATION, GROUP_CHAT = 22, 23
CREATED_TIME, MODIFIED_TIME, CREATED_USER, MODIFIED_USER, AUTO_NUMBER = 1001, 1002, 1003, 1004, 1005

UI_TYPES: dict[int, str] = {
    TEXT: "Text",
    NUMBER: "Number",
    SINGLE_SELECT: "SingleSelect",
    MULTI_SELECT: "MultiSelect",
    DATE: "DateTime",
    CHECKBOX: "Checkbox",
    PERSON: "User",
    PHONE: "Phone",
    URL: "Url",
    ATTACHMENT: "Attachment",
    LINK: "SingleLink",
    LOOKUP: "Lookup",
    FORMULA: "Formula",
    DUPLEX_LINK: "DuplexLink",
    LOCATION: "Location",
    GROUP_CHAT: "GroupChat",
    CREATED_TIME: "CreatedTime",
    MODIFIED_TIME: "ModifiedTime",
    CREATED_USER: "CreatedUser",
    MODIFIED_USER: "ModifiedUser",
    AUTO_NUMBER: "AutoNumber",
}
# Lookup (19) exists but cannot be created through the API.
CREATABLE_TYPES = frozenset(UI_TYPES) - {LOOKUP}
NUMBER_UI_TYPES = frozenset({"Number", "Currency", "Progress", "Rating"})
READ_ONLY_TYPES = frozenset(
    {LOOKUP, FORMULA, CREATED_TIME, MODIFIED_TIME, CREATED_USER, MODIFIED_USER, AUTO_NUMBER}
)
# Writable on the platform, but the sandbox does not model their values.
UNMODELLED_TYPES = frozenset({PERSON, ATTACHMENT, LINK, DUPLEX_LINK, LOCATION, GROUP_CHAT})
DATE_TYPES = frozenset({DATE, CREATED_TIME, MODIFIED_TIME})
STRING_TYPES = frozenset({TEXT, PHONE, SINGLE_SELECT, URL})

NUMBER_FORMATTERS = frozenset(
    {"0", "0.0", "0.00", "0.000", "0.0000", "1,000", "1,000.00", "%", "0%", "0.00%"}
)
DATE_FORMATTERS = frozenset(
    {
        "yyyy/MM/dd",
        "yyyy/MM/dd HH:mm",
        "yyyy-MM-dd",
        "yyyy-MM-dd HH:mm",
        "MM-dd",
        "MM/dd/yyyy",
        "dd/MM/yyyy",
    }
)

OPERATORS = frozenset(
    {
        "is",
        "isNot",
        "contains",
        "doesNotContain",
        "isEmpty",
        "isNotEmpty",
        "isGreater",
        "isGreaterEqual",
        "isLess",
        "isLessEqual",
    }
)
DATE_OPERATORS = frozenset({"is", "isEmpty", "isNotEmpty", "isGreater", "isLess"})
TEXT_OPERATORS = frozenset({"is", "isNot", "contains", "doesNotContain", "isEmpty", "isNotEmpty"})
NUMBER_OPERATORS = OPERATORS - {"contains", "doesNotContain"}

# Records per call (reference §4.2, the batch_create/batch_update/batch_delete pages): 1,000 to
# create or update, 500 to delete; one more is refused whole with 1254104. lark-oapi's request
# builders carry no limit of their own.
MAX_CREATE_UPDATE = 1000
MAX_DELETE = 500
MAX_SEARCH_PAGE = 500
MAX_FIELD_PAGE = 100
MAX_FILTER_CHARS = 2000
MAX_CONDITIONS = 50
MAX_FIELDS = 300
# Tables: "In each Base, the total number of tables and dashboards is capped at 100" (1254100
# TableExceedLimit); names 1-100 characters, trimmed, unique in the Base (1254013), without
# / \ ? * : [ ] (app-table create and patch pages,
# https://open.larksuite.com/document/uAjLw4CM/ukTMukTMukTM/reference/bitable-v1/app-table/create
# and .../app-table/patch); batch_delete takes at most 50 table ids.
MAX_TABLES = 100
MAX_TABLE_NAME = 100
TABLE_NAME_FORBIDDEN = re.compile(r"[\[\]:\\/?*]")
MAX_TABLE_BATCH = 50
DEFAULT_TABLE_NAME = "数据表"
IDEMPOTENCY_WINDOW_S = 24 * 3600
TOKEN_REISSUE_BELOW_S = 30 * 60
UUID_WINDOW_S = 3600
UUID_MAX_LEN = 50
# Message size limits are on the raw request body, as the create/reply pages word them:
# "文本消息请求体最大不能超过 150 KB；卡片消息、富文本消息请求体最大不能超过 30 KB" (230025 above).
# The card travels as a JSON string inside that body, so its escaped quotes count too.
CARD_LIMIT_BYTES = 30 * 1024
TEXT_LIMIT_BYTES = 150 * 1024
CARD_EDITABLE_S = 14 * 24 * 3600
# IM file upload (im-v1 file/create page, "使用限制": "文件大小不得超过 30 MB，且不允许上传空文件";
# lark-oapi 1.7.5 ``CreateFileRequestBody``: file_type, file_name, duration, file, sent as
# multipart/form-data). file_type is one of the page's values; anything else is "stream".
FILE_LIMIT_BYTES = 30 * 1024 * 1024
FILE_TYPES = frozenset({"opus", "mp4", "pdf", "doc", "xls", "ppt", "stream"})
FILE_NAME_MAX = 250
CARD_TOKEN_TTL_S = 30 * 60
CARD_TOKEN_USES = 2
HOOK_BODY_LIMIT = 20 * 1024
HOOK_TIMESTAMP_WINDOW_S = 3600
MSG_TYPES = frozenset(
    {
        "text",
        "post",
        "image",
        "file",
        "audio",
        "media",
        "sticker",
        "interactive",
        "share_chat",
        "share_user",
    }
)
RECEIVE_ID_TYPES = frozenset({"open_id", "user_id", "union_id", "email", "chat_id"})
TENANT_KEY = "sandbox_tenant_key"
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
ALNUM = string.ascii_letters + string.digits

MSG_MISSING_TOKEN = (
    "Missing access token for authorization. Please make a request with token attached."
)
MSG_INVALID_TOKEN = (
    "Invalid access token for authorization. Please make a request with token attached."
)
MSG_HOOK_SIGN = "sign match fail or timestamp is not within one hour from current time"

# Messages used when a fault injects a business code without context.
CODE_MESSAGES: dict[int, str] = {
    99991400: "request trigger frequency limit",
    99991661: MSG_MISSING_TOKEN,
    99991663: MSG_INVALID_TOKEN,
    1254290: "TooManyRequest",
    1254291: "Write conflict",
    1254013: "TableNameDuplicated",
    1254100: "TableExceedLimit",
    1254607: "Data not ready, please try again later",
    1254608: "Same API requests are submitted repeatedly",
    1255001: "InternalError",
    1255002: "RpcError",
    1255040: "Request timed out, please try again later",
    230002: "Bot/User can NOT be out of the chat.",
    232006: "Your request specifies a chat_id which is invalid.",
    232009: "Your request specifies a chat which has already been dissolved.",
    230020: "This operation triggers the frequency limit.",
    11232: "frequency limited",
    11233: "frequency limited",
}
# The gateway's rate limits: HTTP 429 and a header saying when to come back (频控策略 page:
# "x-ogw-ratelimit-reset: 52 //恢复 limit 周期，单位：秒"). The IM's own limit 230020 is a plain
# 400 without that header (its row in the send/reply error tables); 11232/11233 (server error
# codes) are answered the same way (their status is unverified).
GATEWAY_LIMIT_CODES = frozenset({99991400, 1254290})
# IM limits (send and reply pages): 1,000 a minute and 50 a second per app and API, 5 a second
# per chat (shared by every bot in it) or user; PATCH: 5 a second per message (reference §3.5).
# The option ``im_limits`` overrides them by name (0 turns one off).
IM_LIMITS = {"app_per_second": 50, "app_per_minute": 1000, "chat_per_second": 5,
             "message_per_second": 5}  # fmt: skip
# The sandbox app's bot, as GET /open-apis/bot/v3/info names it. Events that @-mention the bot
# carry this open_id (``adsync.sandbox.events``); open_ids are "ou_" + 32 hex digits.
BOT_OPEN_ID = "ou_5ad0c0bd1e2a4f6b8c3d7e9f01a2b3c4"
BOT_NAME = "adsync"
CHAT_MODES = frozenset({"group", "topic", "p2p"})  # GET /im/v1/chats/:chat_id's chat_mode


def http_status_for(code: int) -> int:
    """The HTTP status Feishu pairs with a business code (most errors are plain 400s)."""
    if code == 0:
        return 200
    if code in GATEWAY_LIMIT_CODES:
        return 429
    if code == 1255040:
        return 504
    if 1255001 <= code <= 1255005:
        return 500
    return 400


class ApiError(Exception):
    """A platform error: rendered as ``{"code", "msg", "error"}`` with its HTTP status."""

    def __init__(
        self, code: int, msg: str, http: int | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http = http if http is not None else http_status_for(code)
        self.headers = headers or {}


class ControlError(Exception):
    """A bad request to a control route (HTTP 400 ``{"ok": false, "error"}``)."""


@dataclass
class Reply:
    """A fully formed response body (for envelopes other than ``{"code":0,"data":...}``)."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def bad_param(what: str) -> ApiError:
    return ApiError(99992402, f"field validation failed: {what}")


def bad_filter(what: str) -> ApiError:
    return ApiError(1254018, f"InvalidFilter: {what}")


def bad_body(what: str) -> ApiError:
    return ApiError(1254001, f"WrongRequestBody: {what}")


def canonical(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


def _default_chats() -> list[dict[str, Any]]:
    return [{"chat_id": "oc_sandbox_reports", "name": "广告日报群", "bot_member": True}]


@dataclass
class Options:
    app_id: str = "cli_sandbox_app"
    app_secret: str = "sandbox-feishu-secret"
    app_token: str = "bascnSandboxApp0001"
    table_id: str = "tblSandboxDaily01"
    table_name: str = "广告日报"
    table_fields: list[dict[str, Any]] | None = None  # None: one primary text field "文本"
    extra_tables: list[dict[str, Any]] = field(default_factory=list)
    doc_timezone: str = "Asia/Shanghai"
    max_rows: int = 20000  # records per table (1254103); plan-dependent, so configurable
    max_tables: int = MAX_TABLES  # tables per Base (1254100)
    max_views: int = MAX_VIEWS  # views per table (1254101)
    chats: list[dict[str, Any]] = field(default_factory=_default_chats)
    write_hold_ms: float = 20.0
    token_lifetime: int = 7200
    im_limits: dict[str, int] = field(default_factory=dict)  # overrides of IM_LIMITS
    bot_open_id: str = BOT_OPEN_ID
    bot_name: str = BOT_NAME

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown feishu sandbox options: {sorted(unknown)}")
        opts = cls(**data)
        try:
            ZoneInfo(opts.doc_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown doc_timezone {opts.doc_timezone!r}") from exc
        unknown_limits = set(opts.im_limits) - set(IM_LIMITS)
        if unknown_limits:
            raise ValueError(f"unknown im_limits: {sorted(unknown_limits)}")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0
               for v in opts.im_limits.values()):  # fmt: skip
            raise ValueError("im_limits are whole numbers >= 0 (0: no limit)")
        if (
            opts.max_rows < 1
            or opts.max_tables < 1
            or opts.max_views < 1
            or opts.token_lifetime < 1
            or opts.write_hold_ms < 0
        ):
            raise ValueError(
                "max_rows, max_tables, max_views and token_lifetime must be >= 1, "
                "write_hold_ms >= 0"
            )
        return opts


# --------------------------------------------------------------------------------------------
# Bitable model
# --------------------------------------------------------------------------------------------


@dataclass
class Field:
    field_id: str
    field_name: str
    type: int
    property: dict[str, Any] | None
    ui_type: str
    is_primary: bool = False

    def as_api(self) -> dict[str, Any]:
        return {
            "field_id": self.field_id,
            "field_name": self.field_name,
            "type": self.type,
            "property": copy.deepcopy(self.property),
            "is_primary": self.is_primary,
            "ui_type": self.ui_type,
            "is_hidden": False,
        }


@dataclass
class Record:
    record_id: str
    values: dict[str, Any]  # field_id -> stored value (never None)
    created_time: int
    last_modified_time: int


@dataclass
class Table:
    app_token: str
    table_id: str
    name: str
    fields: list[Field] = field(default_factory=list)
    records: dict[str, Record] = field(default_factory=dict)  # insertion (view) order
    views: dict[str, View] = field(default_factory=dict)  # view_id -> view, in bar order
    busy: bool = False  # a write is in progress (writes are serial per table)
    max_rows: int | None = None  # this table's own row limit (plans differ); None: the option

    def field_by_name(self, name: Any) -> Field | None:
        # Exact match, spaces included, like the platform.
        return next((f for f in self.fields if f.field_name == name), None)

    def field_by_id(self, field_id: str) -> Field | None:
        return next((f for f in self.fields if f.field_id == field_id), None)

    def require_field(self, name: Any) -> Field:
        found = self.field_by_name(name)
        if found is None:
            raise ApiError(1254045, f"FieldNameNotFound: {name!r}")
        return found


@dataclass
class IdempotencyEntry:
    fingerprint: str
    created: float
    response: dict[str, Any] | None = None  # None while the first request is in flight


def default_property(ftype: int) -> dict[str, Any] | None:
    if ftype == NUMBER:
        return {"formatter": "0"}
    if ftype in DATE_TYPES:
        return {"date_formatter": "yyyy/MM/dd", "auto_fill": False}
    if ftype in (SINGLE_SELECT, MULTI_SELECT):
        return {"options": []}
    return None


def validate_property(ftype: int, prop: Any) -> dict[str, Any] | None:
    """Check a field ``property`` the way the platform does for the types adsync uses."""
    if prop is None:
        return default_property(ftype)
    if not isinstance(prop, dict):
        raise bad_body("property must be an object")
    merged = {**(default_property(ftype) or {}), **copy.deepcopy(prop)}
    if ftype == NUMBER and merged.get("formatter") not in NUMBER_FORMATTERS:
        raise bad_body(f"number formatter must be one of {sorted(NUMBER_FORMATTERS)}")
    if ftype in DATE_TYPES:
        if merged.get("date_formatter") not in DATE_FORMATTERS:
            raise bad_body(f"date_formatter must be one of {sorted(DATE_FORMATTERS)}")
        if not isinstance(merged.get("auto_fill"), bool):
            raise bad_body("auto_fill must be a boolean")
    if ftype in (SINGLE_SELECT, MULTI_SELECT):
        options = merged.get("options")
        if not isinstance(options, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in options
        ):
            raise bad_body("options must be a list of {name}")
    return merged or None


def conv_error(code: int, label: str, fld: Field, value: Any, expected: str) -> ApiError:
    got = type(value).__name__
    return ApiError(code, f"{label}: field {fld.field_name!r} expects {expected}, got {got}")


def convert_value(fld: Field, value: Any) -> Any:
    """A written value -> the stored value (None = empty). Strict, like the platform."""
    if value is None:
        return None
    t = fld.type
    if t in READ_ONLY_TYPES:
        raise ApiError(1254015, f"Field types do not match: {fld.field_name!r} is read-only")
    if t in UNMODELLED_TYPES:
        raise ApiError(
            1254015, f"Field types do not match: sandbox does not model writes to type {t}"
        )
    if t == TEXT:
        if not isinstance(value, str):
            raise conv_error(1254060, "TextFieldConvFail", fld, value, "a string")
        return value or None
    if t == NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise conv_error(1254061, "NumberFieldConvFail", fld, value, "a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise conv_error(1254061, "NumberFieldConvFail", fld, value, "a finite number")
        # Stored as IEEE doubles: integers beyond 2^53 lose precision, as on the platform.
        return float(value) if isinstance(value, int) and abs(value) > 2**53 else value
    if t == SINGLE_SELECT:
        if not isinstance(value, str):
            raise conv_error(1254062, "SingleSelectFieldConvFail", fld, value, "a string")
        return value or None
    if t == MULTI_SELECT:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise conv_error(1254063, "MultiSelectFieldConvFail", fld, value, "a list of strings")
        return list(value) or None
    if t == DATE:
        if isinstance(value, bool) or not isinstance(value, int):
            raise conv_error(1254064, "DatetimeFieldConvFail", fld, value, "an int ms timestamp")
        return value
    if t == CHECKBOX:
        if not isinstance(value, bool):
            raise conv_error(1254065, "CheckboxFieldConvFail", fld, value, "a boolean")
        return value or None  # an unchecked box is an empty cell
    if t == PHONE:
        if not isinstance(value, str):
            raise conv_error(1254072, "PhoneFieldConvFail", fld, value, "a string")
        return value or None
    if t == URL:
        ok = isinstance(value, dict) and all(
            isinstance(value.get(k), str) for k in ("text", "link")
        )
        if not ok:
            raise conv_error(1254068, "URLFieldConvFail", fld, value, "{text, link}")
        return {"text": value["text"], "link": value["link"]}
    raise ApiError(1254015, f"Field types do not match: unknown field type {t}")


def text_of(fld: Field, stored: Any) -> str:
    """The text a filter compares against (a text cell's joined segments)."""
    if stored is None:
        return ""
    if fld.type == URL:
        return str(stored.get("text", ""))
    return str(stored)


def coerce_on_type_change(stored: Any, old: int, new: int) -> Any:
    """Best-effort conversion of a cell when a field's type changes (None: value dropped)."""
    if old == new:
        return stored
    if new == TEXT:
        if isinstance(stored, list):
            return ",".join(map(str, stored))
        if isinstance(stored, dict):
            return stored.get("text")
        return str(stored)
    if new == NUMBER and isinstance(stored, str):
        try:
            number = float(stored.replace(",", ""))
        except ValueError:
            return None
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if new == DATE and isinstance(stored, int | float) and not isinstance(stored, bool):
        return int(stored)
    if new in (SINGLE_SELECT, PHONE) and isinstance(stored, str):
        return stored
    return None


# --------------------------------------------------------------------------------------------
# IM model
# --------------------------------------------------------------------------------------------


@dataclass
class Chat:
    chat_id: str
    name: str
    bot_member: bool
    chat_type: str = "group"  # the platform's chat_mode: group | topic | p2p
    dissolved: bool = False  # a group that was disbanded: its id answers 232009


@dataclass
class Message:
    message_id: str
    chat_id: str
    msg_type: str
    content: str
    create_time: int
    update_time: int
    via: str  # "create" | "reply"
    receive_id_type: str = "chat_id"
    receive_id: str = ""
    parent_id: str | None = None
    root_id: str | None = None
    thread_id: str | None = None
    uuid: str | None = None
    versions: list[dict[str, Any]] = field(default_factory=list)

    def as_api(self, app_id: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "msg_type": self.msg_type,
            "create_time": str(self.create_time),
            "update_time": str(self.update_time),
            "deleted": False,
            "updated": len(self.versions) > 1,
            "chat_id": self.chat_id,
            "sender": {
                "id": app_id,
                "id_type": "app_id",
                "sender_type": "app",
                "tenant_key": TENANT_KEY,
            },
            "body": {"content": self.content},
        }
        for key in ("root_id", "parent_id", "thread_id"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        return out

    def as_control(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "msg_type": self.msg_type,
            "via": self.via,
            "receive_id_type": self.receive_id_type,
            "receive_id": self.receive_id,
            "parent_id": self.parent_id,
            "root_id": self.root_id,
            "thread_id": self.thread_id,
            "uuid": self.uuid,
            "create_time": self.create_time,
            "update_time": self.update_time,
            "content": parse_json_or_none(self.content),
            "raw_content": self.content,
            "versions": copy.deepcopy(self.versions),
        }


@dataclass
class UploadedFile:
    file_key: str
    file_type: str
    file_name: str
    data: bytes
    duration: int | None
    uploaded: int  # ms

    def describe(self) -> dict[str, Any]:
        return {
            "file_key": self.file_key,
            "file_type": self.file_type,
            "file_name": self.file_name,
            "size": len(self.data),
            "duration": self.duration,
        }


@dataclass
class CardToken:
    message_id: str
    issued: float
    uses: int = 0


@dataclass
class Hook:
    hook_id: str
    secret: str | None
    messages: list[dict[str, Any]] = field(default_factory=list)


def parse_json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def card_problem(card: Any) -> str | None:
    """Why a card JSON would be refused (None: acceptable); ``validate_card`` in
    ``adsync.sandbox.cards`` holds the rules and says which sub-code the platform answers."""
    error = validate_card(card)
    return None if error is None else error.platform_message()


def card_error(card: Any) -> ApiError | None:
    """The platform's answer to an unacceptable card: 230099 with the documented sub-code."""
    error = validate_card(card)
    return None if error is None else ApiError(230099, error.platform_message())


def card_is_shared(card: Any) -> bool:
    if not isinstance(card, dict):
        return False
    if card.get("schema") == "2.0" or card.get("type") == "template":
        return True
    config = card.get("config")
    return isinstance(config, dict) and config.get("update_multi") is True


def hook_sign(timestamp: str, secret: str) -> str:
    """Feishu custom-bot signature: HMAC-SHA256 keyed by "timestamp\\nsecret" over b""."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


# --------------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------------


class FeishuSandbox:
    """The Feishu Open Platform as adsync sees it. Thread-safe: one lock guards all state."""

    name = "feishu"

    def __init__(self, seed: int = 1) -> None:
        self.faults = FaultInjector(rate_limit_code=99991400)
        self.clock: Callable[[], float] = time.time  # replaceable in tests
        self._seed = seed
        self._lock = threading.Lock()
        self.reset({})

    # ---- lifecycle -------------------------------------------------------------------------

    def reset(self, options: dict[str, Any]) -> None:
        opts = Options.from_dict(options or {})
        tables = [self._default_table_spec(opts), *opts.extra_tables]
        with self._lock:
            self._opts = opts
            self._tz = ZoneInfo(opts.doc_timezone)
            self._rng = random.Random(self._seed)
            self._tokens: dict[str, float] = {}  # tenant token -> absolute expiry
            self._current_token: str | None = None
            self._tables: dict[tuple[str, str], Table] = {}
            # Bases by app_token: a Base outlives its tables (deleting the last table leaves
            # the Base, whose table ids then answer 1254041, not 1254040).
            self._apps: set[str] = set()
            self._idempotency: dict[tuple[str, str, str], IdempotencyEntry] = {}
            self._chats: dict[str, Chat] = {}
            self._messages: dict[str, Message] = {}
            self._uuids: dict[str, tuple[str, float]] = {}
            self._card_tokens: dict[str, CardToken] = {}
            self._files: dict[str, UploadedFile] = {}
            limits = {**IM_LIMITS, **opts.im_limits}
            self._im_app = [
                Window(limits[name], period)
                for name, period in (("app_per_second", 1.0), ("app_per_minute", 60.0))
                if limits[name]
            ]
            self._im_chat = Window(limits["chat_per_second"] or 10**9, 1.0)
            self._im_patch = Window(limits["message_per_second"] or 10**9, 1.0)
            self._hooks: dict[str, Hook] = {}
            self._calls: Counter[str] = Counter()
            self._errors: Counter[str] = Counter()
            self._counters: Counter[str] = Counter()
            try:
                for chat in opts.chats:
                    self._add_chat(chat)
                for spec in tables:
                    self._install_table(spec)
            except ControlError as exc:
                raise ValueError(f"feishu sandbox options: {exc}") from exc

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self._calls),
                "writes": self._counters["writes"],
                "write_conflicts": self._counters["write_conflicts"],
                "records_created": self._counters["records_created"],
                "records_updated": self._counters["records_updated"],
                "records_deleted": self._counters["records_deleted"],
                "idempotent_replays": self._counters["idempotent_replays"],
                "tables_created": self._counters["tables_created"],
                "tables_deleted": self._counters["tables_deleted"],
                "views_created": self._counters["views_created"],
                "tokens_issued": self._counters["tokens_issued"],
                "messages_sent": self._counters["messages_sent"],
                "messages_patched": self._counters["messages_patched"],
                "message_dedups": self._counters["message_dedups"],
                "files_uploaded": self._counters["files_uploaded"],
                "hook_messages": self._counters["hook_messages"],
                "errors": dict(self._errors),
                "faults_injected": self.faults.injected,
                "tables": {
                    f"{t.app_token}/{t.table_id}": len(t.records) for t in self._tables.values()
                },
            }

    # ---- helpers: ids, time ----------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _new_id(self, prefix: str, length: int = 10, alphabet: str = ALNUM) -> str:
        return prefix + "".join(self._rng.choices(alphabet, k=length))

    def _day_start_ms(self, ms: int) -> int:
        day = datetime.fromtimestamp(ms / 1000, self._tz).date()
        return self._midnight_ms(day)

    def _midnight_ms(self, day: date) -> int:
        return int(datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp() * 1000)

    # ---- tables: install -------------------------------------------------------------------

    def _default_table_spec(self, opts: Options) -> dict[str, Any]:
        fields = opts.table_fields
        if fields is None:
            fields = [{"field_name": "文本", "type": TEXT}]
        return {
            "app_token": opts.app_token,
            "table_id": opts.table_id,
            "name": opts.table_name,
            "fields": fields,
            "records": [],
        }

    def _install_table(self, spec: dict[str, Any]) -> Table:
        """Create/replace a table from a layout spec (caller holds the lock)."""
        try:
            app_token, table_id = str(spec["app_token"]), str(spec["table_id"])
        except KeyError as exc:
            raise ControlError(f"table spec needs {exc.args[0]}") from exc
        field_specs = spec.get("fields") or []
        if not field_specs:
            raise ControlError("a table needs at least one field (the first is primary)")
        table = Table(app_token, table_id, str(spec.get("name") or table_id))
        limit = spec.get("max_rows")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ControlError("max_rows must be a whole number of at least 1")
            table.max_rows = limit
        for i, fspec in enumerate(field_specs):
            try:
                self._add_field(table, fspec, primary=(i == 0))
            except ApiError as exc:
                raise ControlError(f"field {fspec!r}: {exc.msg}") from exc
        for rspec in spec.get("records") or []:
            values = rspec.get("fields") if isinstance(rspec, dict) else None
            if not isinstance(values, dict):
                raise ControlError("records must be [{fields: {...}}]")
            try:
                stored = self._convert_fields(table, values)
            except ApiError as exc:
                raise ControlError(exc.msg) from exc
            now = self._now_ms()
            rid = str(rspec.get("record_id") or self._unique_record_id(table))
            table.records[rid] = Record(rid, _drop_empty(stored), now, now)
        self._add_default_view(table, DEFAULT_VIEW_NAME)
        self._tables[(app_token, table_id)] = table
        self._apps.add(app_token)
        return table

    def _add_field(self, table: Table, spec: Any, primary: bool = False) -> Field:
        if not isinstance(spec, dict):
            raise bad_body("field must be an object")
        name, ftype = spec.get("field_name"), spec.get("type")
        if not isinstance(name, str) or not name.strip():
            raise bad_body("field_name is required")
        if isinstance(ftype, bool) or not isinstance(ftype, int) or ftype not in CREATABLE_TYPES:
            raise bad_body(f"invalid field type {ftype!r}")
        if table.field_by_name(name) is not None:
            raise ApiError(1254014, f"FieldNameDuplicated: {name!r}")
        if len(table.fields) >= MAX_FIELDS:
            raise ApiError(1254105, "TooManyFields")
        fld = Field(
            field_id=self._new_id("fld"),
            field_name=name,
            type=ftype,
            property=validate_property(ftype, spec.get("property")),
            ui_type=self._ui_type(ftype, spec.get("ui_type")),
            is_primary=primary,
        )
        table.fields.append(fld)
        return fld

    @staticmethod
    def _ui_type(ftype: int, requested: Any) -> str:
        if requested is None:
            return UI_TYPES[ftype]
        allowed = NUMBER_UI_TYPES if ftype == NUMBER else {UI_TYPES[ftype]}
        if requested not in allowed:
            raise bad_body(f"ui_type {requested!r} does not match type {ftype}")
        return str(requested)

    def _unique_record_id(self, table: Table) -> str:
        while True:
            rid = self._new_id("rec")
            if rid not in table.records:
                return rid

    def _convert_fields(self, table: Table, values: Any) -> dict[str, Any]:
        """{field name: written value} -> {field_id: stored value or None}."""
        if not isinstance(values, dict):
            raise bad_body("fields must be an object keyed by field name")
        out: dict[str, Any] = {}
        for name, value in values.items():
            fld = table.require_field(name)
            stored = convert_value(fld, value)
            if fld.type == SINGLE_SELECT and stored is not None:
                _ensure_option(fld, stored)
            if fld.type == MULTI_SELECT and stored is not None:
                for option in stored:
                    _ensure_option(fld, option)
            out[fld.field_id] = stored
        return out

    def _table(self, app_token: str, table_id: str) -> Table:
        """Look a table up (caller holds the lock)."""
        table = self._tables.get((app_token, table_id))
        if table is not None:
            return table
        if app_token not in self._apps:
            raise ApiError(1254040, "BaseTokenNotFound")
        raise ApiError(1254041, "TableIdNotFound")

    # ---- chats -----------------------------------------------------------------------------

    def _add_chat(self, spec: dict[str, Any]) -> Chat:
        chat_id = spec.get("chat_id")
        if not isinstance(chat_id, str) or not chat_id:
            raise ControlError("chat needs chat_id")
        mode = spec.get("chat_mode", "group")
        if mode not in CHAT_MODES:
            raise ControlError(f"chat_mode must be one of {sorted(CHAT_MODES)}")
        chat = Chat(
            chat_id,
            str(spec.get("name") or chat_id),
            bool(spec.get("bot_member", True)),
            mode,
            dissolved=bool(spec.get("dissolved", False)),
        )
        self._chats[chat_id] = chat
        return chat

    # ========================================================================================
    # Flask wiring
    # ========================================================================================

    def register(self, app: Flask) -> None:
        bitable = "/open-apis/bitable/v1/apps/<app_token>"
        table = bitable + "/tables/<table_id>"
        routes: list[tuple[str, str, Callable[..., Any], bool]] = [
            ("POST", "/open-apis/auth/v3/tenant_access_token/internal", self._token, False),
            ("GET", bitable, self._get_app, True),
            ("GET", bitable + "/tables", self._list_tables, True),
            ("POST", bitable + "/tables", self._create_table, True),
            ("POST", bitable + "/tables/batch_create", self._batch_create_tables, True),
            ("POST", bitable + "/tables/batch_delete", self._batch_delete_tables, True),
            ("DELETE", table, self._delete_table, True),
            ("GET", table + "/fields", self._list_fields, True),
            ("POST", table + "/fields", self._create_field, True),
            ("PUT", table + "/fields/<field_id>", self._update_field, True),
            ("POST", table + "/records/search", self._search_records, True),
            ("POST", table + "/records/batch_create", self._batch_create, True),
            ("POST", table + "/records/batch_update", self._batch_update, True),
            ("POST", table + "/records/batch_delete", self._batch_delete, True),
            ("GET", table + "/records", self._list_records, True),
            ("GET", table + "/records/<record_id>", self._get_record, True),
            ("GET", table + "/views", self._list_views, True),
            ("POST", table + "/views", self._create_view, True),
            ("GET", table + "/views/<view_id>", self._get_view, True),
            ("PATCH", table + "/views/<view_id>", self._patch_view, True),
            ("DELETE", table + "/views/<view_id>", self._delete_view, True),
            ("POST", "/open-apis/im/v1/messages", self._create_message, True),
            ("POST", "/open-apis/im/v1/files", self._upload_file, True),
            ("POST", "/open-apis/im/v1/messages/<message_id>/reply", self._reply_message, True),
            ("PATCH", "/open-apis/im/v1/messages/<message_id>", self._patch_message, True),
            (
                "GET",
                "/open-apis/im/v1/chats/<chat_id>/members/is_in_chat",
                self._is_in_chat,
                True,
            ),
            ("POST", "/open-apis/interactive/v1/card/update", self._delayed_card_update, True),
            ("POST", "/open-apis/bot/v2/hook/<hook_id>", self._hook, False),
            ("GET", "/open-apis/bot/v3/info", self._bot_info, True),
            ("GET", "/open-apis/im/v1/chats/<chat_id>", self._get_chat, True),
        ]
        for method, rule, handler, auth in routes:
            app.add_url_rule(
                rule,
                endpoint=f"feishu.{handler.__name__.lstrip('_')}",
                view_func=self._view(method, rule, handler, auth),
                methods=[method],
            )
        self._register_control(app)

    def _view(
        self, method: str, rule: str, handler: Callable[..., Any], auth: bool
    ) -> Callable[..., Response]:
        route = f"{method} {rule}"

        def view(**kwargs: Any) -> Response:
            fault = self.faults.before_request(request.path)
            with self._lock:
                self._calls[route] += 1
            if fault is not None:
                return self._render_fault(fault)
            try:
                if auth:
                    self._check_auth()
                result = handler(**kwargs)
            except ApiError as exc:
                with self._lock:
                    self._errors[str(exc.code)] += 1
                return self._error_response(exc.code, exc.msg, exc.http, exc.headers)
            self.faults.after_request(request.path)  # done; a slow platform answers late
            if isinstance(result, Reply):
                return self._json(result.body, result.status, result.headers)
            return self._json({"code": 0, "msg": "success", "data": result})

        return view

    # ---- rendering -------------------------------------------------------------------------

    def _log_id(self) -> str:
        return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(9).upper()

    def _json(
        self, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        resp = Response(
            json.dumps(body, ensure_ascii=False),
            status,
            content_type="application/json; charset=utf-8",
        )
        # lark-oapi reads the log id from exactly this header spelling (BaseResponse.get_log_id).
        resp.headers["X-Tt-Logid"] = self._log_id()
        for key, value in (headers or {}).items():
            resp.headers[key] = value
        return resp

    def _error_response(
        self, code: int, msg: str, http: int, extra: dict[str, str] | None = None
    ) -> Response:
        headers = {"x-ogw-ratelimit-reset": "1"} if code in GATEWAY_LIMIT_CODES else {}
        headers.update(extra or {})
        log_id = self._log_id()
        body = {
            "code": code,
            "msg": msg,
            "error": {
                "log_id": log_id,
                "troubleshooter": (
                    "排查建议查看(Troubleshooting suggestions): "
                    f"https://open.feishu.cn/search?from=openapi&log_id={log_id}&code={code}"
                ),
            },
        }
        return self._json(body, http, headers)

    def _render_fault(self, fault: Fault) -> Response:
        if fault.http:
            # A gateway-level failure: short non-JSON body, which the SDK cannot parse.
            text = f"{fault.code} {fault.reason}"
            return Response(text, fault.code, content_type="text/plain; charset=utf-8")
        with self._lock:
            self._errors[str(fault.code)] += 1
        msg = CODE_MESSAGES.get(fault.code, f"injected error {fault.code}")
        return self._error_response(fault.code, msg, http_status_for(fault.code))

    # ---- request parsing -------------------------------------------------------------------

    @staticmethod
    def _body(bad_code: int) -> dict[str, Any]:
        # Parse regardless of Content-Type: lark-oapi's token request sends none.
        raw = request.get_data(cache=True)
        if not raw:
            raise ApiError(bad_code, "request body is empty")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ApiError(bad_code, "request body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise ApiError(bad_code, "request body must be a JSON object")
        return data

    @staticmethod
    def _query_int(name: str, default: int, maximum: int) -> int:
        raw = request.args.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise bad_param(f"{name} must be an integer") from exc
        if value < 1 or value > maximum:
            raise bad_param(f"{name} must be between 1 and {maximum}")
        return value

    @staticmethod
    def _query_bool(name: str) -> bool:
        # lark-oapi sends Python's str(True) -> "True"; the platform accepts either case.
        raw = request.args.get(name)
        if raw is None:
            return False
        if raw.lower() not in ("true", "false"):
            raise bad_param(f"{name} must be true or false")
        return raw.lower() == "true"

    @staticmethod
    def _check_user_id_type() -> None:
        value = request.args.get("user_id_type")
        if value is not None and value not in ("open_id", "union_id", "user_id"):
            raise bad_param("user_id_type must be open_id, union_id or user_id")

    # ========================================================================================
    # Auth
    # ========================================================================================

    def _token(self) -> Reply:
        body = self._body(10003)
        app_id, app_secret = body.get("app_id"), body.get("app_secret")
        if not isinstance(app_id, str) or not isinstance(app_secret, str) or not app_id:
            raise ApiError(10003, "invalid param")
        with self._lock:
            if app_id != self._opts.app_id:
                raise ApiError(10003, "invalid param")
            if not hmac.compare_digest(app_secret.encode(), self._opts.app_secret.encode()):
                raise ApiError(10014, "app secret invalid")
            token, remaining = self._issue_token()
        return Reply({"code": 0, "msg": "ok", "tenant_access_token": token, "expire": remaining})

    def _issue_token(self) -> tuple[str, int]:
        """Same token while >= 30 min remain; else a new one, the old staying valid."""
        now = self.clock()
        current = self._current_token
        if current is not None and current in self._tokens:
            remaining = self._tokens[current] - now
            if remaining >= TOKEN_REISSUE_BELOW_S:
                return current, int(remaining)
        token = "t-" + secrets.token_hex(20)  # unpredictable; not from the seeded rng
        self._tokens[token] = now + self._opts.token_lifetime
        self._current_token = token
        self._counters["tokens_issued"] += 1
        return token, self._opts.token_lifetime

    def _check_auth(self) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(99991661, MSG_MISSING_TOKEN)
        with self._lock:
            expiry = self._tokens.get(token)
            if expiry is None or expiry <= self.clock():
                raise ApiError(99991663, MSG_INVALID_TOKEN)

    # ========================================================================================
    # Bitable: app, tables, fields
    # ========================================================================================

    def _get_app(self, app_token: str) -> dict[str, Any]:
        with self._lock:
            if app_token not in self._apps:
                raise ApiError(1254040, "BaseTokenNotFound")
            return {
                "app": {
                    "app_token": app_token,
                    "name": "Sandbox Base",
                    "revision": 1,
                    "is_advanced": False,
                    "time_zone": self._opts.doc_timezone,
                }
            }

    def _list_tables(self, app_token: str) -> dict[str, Any]:
        page_size = self._query_int("page_size", 20, 100)
        with self._lock:
            if app_token not in self._apps:
                raise ApiError(1254040, "BaseTokenNotFound")
            tables = self._tables_of(app_token)
            items = [{"table_id": t.table_id, "name": t.name, "revision": 1} for t in tables]
        return self._page(items, page_size, f"tables:{app_token}")

    def _tables_of(self, app_token: str) -> list[Table]:
        return [t for key, t in self._tables.items() if key[0] == app_token]

    def _create_table(self, app_token: str) -> dict[str, Any]:
        """POST .../tables: one table, with its initial fields (the first is the primary)."""
        body = self._body(1254000)
        spec = body.get("table", {})
        if not isinstance(spec, dict):
            raise bad_body("table must be an object")
        fields = spec.get("fields")
        view_name = spec.get("default_view_name")
        if fields is not None and (not isinstance(fields, list) or not 1 <= len(fields) <= 300):
            raise bad_body("fields must be a list of 1 to 300 fields")
        if view_name is not None and (
            not isinstance(view_name, str) or re.search(r"[\[\]]", view_name)
        ):
            raise ApiError(1254022, "InvalidViewName")
        with self._lock:
            table = self._new_table(app_token, spec.get("name"), fields, view_name)
            out: dict[str, Any] = {"table_id": table.table_id}
            if fields is not None or view_name is not None:
                # Only then does the platform name a default view and return its id.
                out["default_view_id"] = next(iter(table.views))
            if fields is not None:
                out["field_id_list"] = [f.field_id for f in table.fields]
            return out

    def _batch_create_tables(self, app_token: str) -> dict[str, Any]:
        """POST .../tables/batch_create: tables by name only; all or nothing."""
        body = self._body(1254000)
        specs = body.get("tables")
        if not isinstance(specs, list) or not specs:
            raise bad_body("tables must be a non-empty list")
        if not all(isinstance(t, dict) for t in specs):
            raise bad_body("each table must be an object")
        with self._lock:
            created: list[Table] = []
            try:
                for spec in specs:
                    created.append(self._new_table(app_token, spec.get("name"), None))
            except ApiError:
                for table in created:
                    self._tables.pop((app_token, table.table_id), None)
                raise
            return {"table_ids": [t.table_id for t in created]}

    def _new_table(
        self,
        app_token: str,
        raw_name: Any,
        fields: list[Any] | None,
        view_name: str | None = None,
    ) -> Table:
        """Validate and add a table (caller holds the lock); nothing is kept on an error."""
        if app_token not in self._apps:
            raise ApiError(1254040, "BaseTokenNotFound")
        existing = self._tables_of(app_token)
        if raw_name is None:
            taken = {t.name for t in existing}
            number = 1
            while f"{DEFAULT_TABLE_NAME}{number}" in taken:
                number += 1
            raw_name = f"{DEFAULT_TABLE_NAME}{number}"
        if not isinstance(raw_name, str):
            raise bad_body("name must be a string")
        name = raw_name.strip()
        if not 1 <= len(name) <= MAX_TABLE_NAME or TABLE_NAME_FORBIDDEN.search(name):
            raise bad_body(f"invalid table name {raw_name!r}: 1-100 characters, no / \\ ? * : [ ]")
        if any(t.name == name for t in existing):
            raise ApiError(1254013, "TableNameDuplicated")
        if len(existing) >= self._opts.max_tables:
            raise ApiError(1254100, f"TableExceedLimit, limited to {self._opts.max_tables}")
        table_id = self._new_id("tbl", 12)
        while (app_token, table_id) in self._tables:
            table_id = self._new_id("tbl", 12)
        table = Table(app_token, table_id, name)
        for i, spec in enumerate(fields or [{"field_name": "文本", "type": TEXT}]):
            self._add_field(table, spec, primary=(i == 0))  # raises before the table is kept
        self._add_default_view(table, view_name or DEFAULT_VIEW_NAME)
        self._tables[(app_token, table_id)] = table
        self._counters["tables_created"] += 1
        return table

    def _add_default_view(self, table: Table, name: str) -> None:
        """Every table opens with one grid view (the table's default)."""
        view = View(self._unique_view_id(table), name)
        table.views[view.view_id] = view

    def _unique_view_id(self, table: Table) -> str:
        while True:
            view_id = self._new_id("vew")
            if view_id not in table.views:
                return view_id

    def _delete_table(self, app_token: str, table_id: str) -> dict[str, Any]:
        with self._lock:
            self._table(app_token, table_id)
            self._drop_table(app_token, table_id)
        return {}

    def _batch_delete_tables(self, app_token: str) -> dict[str, Any]:
        body = self._body(1254000)
        ids = body.get("table_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise bad_body("table_ids must be a non-empty list of strings")
        if len(ids) > MAX_TABLE_BATCH:
            raise bad_body(f"at most {MAX_TABLE_BATCH} table_ids per request")
        with self._lock:
            for table_id in ids:
                self._table(app_token, table_id)  # all must exist: nothing deleted otherwise
            for table_id in ids:
                self._drop_table(app_token, table_id)
        return {}

    def _drop_table(self, app_token: str, table_id: str) -> None:
        """Remove a table and everything keyed by it (caller holds the lock)."""
        self._tables.pop((app_token, table_id), None)
        for key in [k for k in self._idempotency if k[:2] == (app_token, table_id)]:
            del self._idempotency[key]
        self._counters["tables_deleted"] += 1

    def _list_fields(self, app_token: str, table_id: str) -> dict[str, Any]:
        page_size = self._query_int("page_size", 20, MAX_FIELD_PAGE)
        with self._lock:
            table = self._table(app_token, table_id)
            items = [f.as_api() for f in table.fields]
        return self._page(items, page_size, f"fields:{app_token}:{table_id}")

    def _create_field(self, app_token: str, table_id: str) -> dict[str, Any]:
        body = self._body(1254000)
        client_token = request.args.get("client_token")

        def apply(table: Table) -> dict[str, Any]:
            return {"field": self._add_field(table, body).as_api()}

        return self._idempotent_write(
            app_token, table_id, client_token, "create_field", body, apply
        )

    def _update_field(self, app_token: str, table_id: str, field_id: str) -> dict[str, Any]:
        body = self._body(1254000)
        client_token = request.args.get("client_token")

        def apply(table: Table) -> dict[str, Any]:
            return {"field": self._apply_field_update(table, field_id, body).as_api()}

        return self._idempotent_write(
            app_token, table_id, client_token, f"update_field:{field_id}", body, apply
        )

    def _apply_field_update(self, table: Table, field_id: str, body: dict[str, Any]) -> Field:
        fld = table.field_by_id(field_id)
        if fld is None:
            raise ApiError(1254044, "FieldIdNotFound")
        name, ftype = body.get("field_name"), body.get("type")
        # PUT replaces the definition: field_name and type are both required.
        if not isinstance(name, str) or not name.strip():
            raise bad_body("field_name is required")
        if isinstance(ftype, bool) or not isinstance(ftype, int) or ftype not in CREATABLE_TYPES:
            raise bad_body(f"invalid field type {ftype!r}")
        other = table.field_by_name(name)
        if other is not None and other is not fld:
            raise ApiError(1254014, f"FieldNameDuplicated: {name!r}")
        prop = validate_property(ftype, body.get("property"))
        ui_type = self._ui_type(ftype, body.get("ui_type"))
        if ftype != fld.type:
            for record in table.records.values():
                if fld.field_id in record.values:
                    value = coerce_on_type_change(record.values[fld.field_id], fld.type, ftype)
                    if value is None:
                        del record.values[fld.field_id]
                    else:
                        record.values[fld.field_id] = value
        fld.field_name, fld.type, fld.property, fld.ui_type = name, ftype, prop, ui_type
        return fld

    # ========================================================================================
    # Bitable: views (adsync.sandbox.bitable_views has the rules)
    # ========================================================================================

    def _list_views(self, app_token: str, table_id: str) -> dict[str, Any]:
        page_size = self._query_int("page_size", 20, MAX_VIEW_PAGE)
        self._check_user_id_type()
        with self._lock:
            table = self._table(app_token, table_id)
            items = [v.listed() for v in table.views.values()]
        return self._page(items, page_size, f"views:{app_token}:{table_id}")

    def _get_view(self, app_token: str, table_id: str, view_id: str) -> dict[str, Any]:
        with self._lock:
            return {"view": self._view_of(self._table(app_token, table_id), view_id).full()}

    def _create_view(self, app_token: str, table_id: str) -> dict[str, Any]:
        body = self._body(1254000)

        def apply(table: Table) -> dict[str, Any]:
            return {"view": self._add_view(table, body.get("view_name"), body.get("view_type"))}

        # Creating, changing or deleting a view is a write to the table (1254291 page).
        return self._serial_write(app_token, table_id, apply)

    def _add_view(self, table: Table, name: Any, view_type: Any) -> dict[str, Any]:
        try:
            taken = {v.view_name for v in table.views.values()}
            view = View(
                self._unique_view_id(table),
                check_view_name(name, taken),
                check_view_type(view_type),
            )
        except ViewProblem as exc:
            raise ApiError(exc.code, exc.msg) from None
        if len(table.views) >= self._opts.max_views:
            raise ApiError(1254101, f"ViewExceedLimit, limited to {self._opts.max_views}")
        table.views[view.view_id] = view
        self._counters["views_created"] += 1
        return view.listed()

    def _patch_view(self, app_token: str, table_id: str, view_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        body = self._body(1254000)

        def apply(table: Table) -> dict[str, Any]:
            view = self._view_of(table, view_id)
            try:
                name = body.get("view_name")
                if name is not None:
                    taken = {v.view_name for v in table.views.values() if v is not view}
                    name = check_view_name(name, taken)
                prop = body.get("property")
                if prop is not None and not isinstance(prop, dict):
                    raise ViewProblem(1254001, "WrongRequestBody: property must be an object")
                prop = prop or {}
                flt = view.filter_info
                if "filter_info" in prop:
                    flt = check_filter_info(
                        prop["filter_info"],
                        {f.field_id: f.type for f in table.fields},
                        DATE_TYPES,
                        OPERATORS,
                        DATE_OPERATORS,
                        self._new_id,
                    )
                hidden = view.hidden_fields
                if prop.get("hidden_fields") is not None:
                    hidden = check_hidden_fields(
                        prop["hidden_fields"], {f.field_id for f in table.fields}
                    )
            except ViewProblem as exc:
                raise ApiError(exc.code, exc.msg) from None
            # Everything checked: now change it (a refused patch changes nothing).
            if name is not None:
                view.view_name = name
            view.filter_info, view.hidden_fields = flt, hidden
            return {"view": view.full()}

        return self._serial_write(app_token, table_id, apply)

    def _delete_view(self, app_token: str, table_id: str, view_id: str) -> dict[str, Any]:
        def apply(table: Table) -> dict[str, Any]:
            self._view_of(table, view_id)
            if len(table.views) == 1:
                raise ApiError(1254008, "EmptyView: a table keeps at least one view")
            del table.views[view_id]
            return {"view_id": view_id, "deleted": True}

        return self._serial_write(app_token, table_id, apply)

    @staticmethod
    def _view_of(table: Table, view_id: str) -> View:
        view = table.views.get(view_id)
        if view is None:
            raise ApiError(1254042, "ViewIdNotFound")
        return view

    # ========================================================================================
    # Bitable: writes (serial per table, idempotent by client_token)
    # ========================================================================================

    def _idempotent_write(
        self,
        app_token: str,
        table_id: str,
        client_token: str | None,
        op: str,
        body: dict[str, Any],
        apply: Callable[[Table], dict[str, Any]],
    ) -> dict[str, Any]:
        if client_token is None:
            return self._serial_write(app_token, table_id, apply)
        if not UUID_RE.match(client_token):
            raise ApiError(1254037, "InvalidClientToken: client_token must be a UUID")
        key = (app_token, table_id, client_token)
        fingerprint = op + "\n" + canonical(body)
        with self._lock:
            self._table(app_token, table_id)
            now = self.clock()
            entry = self._idempotency.get(key)
            if entry is not None and now - entry.created > IDEMPOTENCY_WINDOW_S:
                entry = None
            if entry is not None:
                if entry.fingerprint != fingerprint:
                    raise ApiError(1255006, "client_token conflict: regenerate the client_token")
                if entry.response is None:
                    raise ApiError(1254608, CODE_MESSAGES[1254608])
                self._counters["idempotent_replays"] += 1
                return copy.deepcopy(entry.response)
            entry = IdempotencyEntry(fingerprint, now)
            self._idempotency[key] = entry
        try:
            data = self._serial_write(app_token, table_id, apply)
        except BaseException:
            # Nothing was written: a retry with the same token must be allowed to run.
            with self._lock:
                if self._idempotency.get(key) is entry:
                    del self._idempotency[key]
            raise
        with self._lock:
            entry.response = copy.deepcopy(data)
        return data

    def _serial_write(
        self, app_token: str, table_id: str, apply: Callable[[Table], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run one write. The platform processes a table's writes one at a time: a write that
        arrives while another is in progress fails with 1254291 and changes nothing."""
        with self._lock:
            table = self._table(app_token, table_id)
            if table.busy:
                self._counters["write_conflicts"] += 1
                raise ApiError(1254291, "Write conflict")
            table.busy = True
        try:
            if self._opts.write_hold_ms:
                time.sleep(self._opts.write_hold_ms / 1000.0)
            with self._lock:
                result = apply(table)  # validates everything before mutating anything
                self._counters["writes"] += 1
                return result
        finally:
            with self._lock:
                table.busy = False

    @staticmethod
    def _records_list(body: dict[str, Any], limit: int) -> list[Any]:
        records = body.get("records")
        if not isinstance(records, list) or not records:
            raise bad_body("records must be a non-empty list")
        if len(records) > limit:
            raise ApiError(1254104, f"RecordsNumLimit: at most {limit} records per request")
        return records

    def _batch_create(self, app_token: str, table_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        self._query_bool("ignore_consistency_check")
        body = self._body(1254000)
        records = self._records_list(body, MAX_CREATE_UPDATE)
        for record in records:
            if not isinstance(record, dict) or not isinstance(record.get("fields"), dict):
                raise bad_body("each record must be {fields: {...}}")

        def apply(table: Table) -> dict[str, Any]:
            converted = [self._convert_fields(table, r["fields"]) for r in records]
            limit = table.max_rows or self._opts.max_rows
            if len(table.records) + len(converted) > limit:
                raise ApiError(1254103, f"RecordExceedLimit: a table holds at most {limit}")
            now, out = self._now_ms(), []
            for values in converted:
                rid = self._unique_record_id(table)
                table.records[rid] = Record(rid, _drop_empty(values), now, now)
                out.append({"record_id": rid, "fields": self._write_view(table, values)})
            self._counters["records_created"] += len(out)
            return {"records": out}

        client_token = request.args.get("client_token")
        return self._idempotent_write(app_token, table_id, client_token, "create", body, apply)

    def _batch_update(self, app_token: str, table_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        self._query_bool("ignore_consistency_check")
        body = self._body(1254000)
        records = self._records_list(body, MAX_CREATE_UPDATE)
        for record in records:
            ok = isinstance(record, dict) and isinstance(record.get("fields"), dict)
            if not ok or not isinstance(record.get("record_id"), str):
                raise bad_body("each record must be {record_id, fields: {...}}")

        def apply(table: Table) -> dict[str, Any]:
            missing = [r["record_id"] for r in records if r["record_id"] not in table.records]
            if missing:
                raise ApiError(1254043, f"RecordIdNotFound: {missing[0]}")
            converted = [self._convert_fields(table, r["fields"]) for r in records]
            now, out = self._now_ms(), []
            for record, values in zip(records, converted, strict=True):
                target = table.records[record["record_id"]]
                for field_id, value in values.items():
                    if value is None:
                        target.values.pop(field_id, None)
                    else:
                        target.values[field_id] = value
                target.last_modified_time = now
                out.append(
                    {"record_id": target.record_id, "fields": self._write_view(table, values)}
                )
            self._counters["records_updated"] += len(out)
            return {"records": out}

        client_token = request.args.get("client_token")
        return self._idempotent_write(app_token, table_id, client_token, "update", body, apply)

    def _batch_delete(self, app_token: str, table_id: str) -> dict[str, Any]:
        self._query_bool("ignore_consistency_check")
        body = self._body(1254000)
        ids = self._records_list(body, MAX_DELETE)
        if not all(isinstance(rid, str) for rid in ids):
            raise bad_body("records must be a list of record_id strings")

        def apply(table: Table) -> dict[str, Any]:
            missing = [rid for rid in ids if rid not in table.records]
            if missing:
                raise ApiError(1254043, f"RecordIdNotFound: {missing[0]}")
            for rid in ids:
                table.records.pop(rid, None)
            self._counters["records_deleted"] += len(ids)
            return {"records": [{"deleted": True, "record_id": rid} for rid in ids]}

        return self._serial_write(app_token, table_id, apply)

    # ========================================================================================
    # Bitable: reads
    # ========================================================================================

    def _search_records(self, app_token: str, table_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        page_size = self._query_int("page_size", 20, MAX_SEARCH_PAGE)
        raw = request.get_data(cache=True)
        body = self._body(1254000) if raw else {}
        view_id = body.get("view_id")
        if view_id is not None and not isinstance(view_id, str):
            raise bad_body("view_id must be a string")
        automatic = body.get("automatic_fields", False)
        if not isinstance(automatic, bool):
            raise bad_body("automatic_fields must be a boolean")
        scope = canonical(
            [app_token, table_id, body.get("filter"), body.get("sort"), body.get("field_names")]
        )
        with self._lock:
            table = self._table(app_token, table_id)
            wanted = self._wanted_fields(table, body.get("field_names"))
            predicate = self._compile_filter(table, body.get("filter"))
            records = [r for r in table.records.values() if predicate(r)]
            records = self._sorted(table, records, body.get("sort"))
            # Render only the page asked for: rendering every match for every page made reading
            # a 16,000-row table cost seconds a page, a simulator artefact that skews benchmarks.
            return self._page(
                records,
                page_size,
                scope,
                lambda r: self._record_view(table, r, wanted, True, automatic),
            )

    def _list_records(self, app_token: str, table_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        page_size = self._query_int("page_size", 20, MAX_SEARCH_PAGE)
        if request.args.get("filter") or request.args.get("sort"):
            raise bad_param("the sandbox supports filter/sort only on records/search")
        segments = self._query_bool("text_field_as_array")
        automatic = self._query_bool("automatic_fields")
        names = self._query_field_names()
        with self._lock:
            table = self._table(app_token, table_id)
            wanted = self._wanted_fields(table, names)
            items = [
                self._record_view(table, r, wanted, segments, automatic)
                for r in table.records.values()
            ]
        scope = canonical([app_token, table_id, "list", names])
        return self._page(items, page_size, scope)

    def _get_record(self, app_token: str, table_id: str, record_id: str) -> dict[str, Any]:
        self._check_user_id_type()
        segments = self._query_bool("text_field_as_array")
        automatic = self._query_bool("automatic_fields")
        with self._lock:
            table = self._table(app_token, table_id)
            record = table.records.get(record_id)
            if record is None:
                raise ApiError(1254043, f"RecordIdNotFound: {record_id}")
            return {"record": self._record_view(table, record, None, segments, automatic)}

    @staticmethod
    def _query_field_names() -> list[str] | None:
        raw = request.args.get("field_names")
        if raw is None:
            return None
        try:
            names = json.loads(raw)
        except ValueError as exc:
            raise bad_param('field_names must be a JSON array like ["a","b"]') from exc
        if not isinstance(names, list):
            raise bad_param("field_names must be a JSON array")
        return names

    @staticmethod
    def _wanted_fields(table: Table, names: Any) -> list[Field] | None:
        if names is None:
            return None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise bad_body("field_names must be a list of strings")
        return [table.require_field(n) for n in names]

    def _record_view(
        self,
        table: Table,
        record: Record,
        wanted: list[Field] | None,
        text_segments: bool,
        automatic: bool,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for fld in wanted if wanted is not None else table.fields:
            value = self._cell(fld, record)
            if value is None:
                continue  # empty cells are omitted, as on the platform
            if fld.type == TEXT and text_segments:
                value = [{"text": value, "type": "text"}]
            fields[fld.field_name] = copy.deepcopy(value)
        out: dict[str, Any] = {"record_id": record.record_id, "fields": fields}
        if automatic:
            out["created_time"] = record.created_time
            out["last_modified_time"] = record.last_modified_time
        return out

    @staticmethod
    def _cell(fld: Field, record: Record) -> Any:
        if fld.type == CREATED_TIME:
            return record.created_time
        if fld.type == MODIFIED_TIME:
            return record.last_modified_time
        return record.values.get(fld.field_id)

    @staticmethod
    def _write_view(table: Table, values: dict[str, Any]) -> dict[str, Any]:
        """Stored values keyed by field name, in write format (text as a plain string)."""
        out: dict[str, Any] = {}
        for field_id, value in values.items():
            fld = table.field_by_id(field_id)
            if fld is not None and value is not None:
                out[fld.field_name] = copy.deepcopy(value)
        return out

    def _page(
        self,
        items: list[Any],
        page_size: int,
        scope: str,
        render: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        """Offset pagination behind an opaque page_token bound to the query that made it;
        ``render`` turns the items of the page (only those) into what is answered."""
        digest = hashlib.sha1(scope.encode()).hexdigest()[:12]
        offset = 0
        token = request.args.get("page_token")
        if token:
            offset = self._decode_page_token(token, digest)
        page = items[offset : offset + page_size]
        if render is not None:
            page = [render(item) for item in page]
        has_more = offset + page_size < len(items)
        out: dict[str, Any] = {"has_more": has_more, "total": len(items)}
        if page:
            # An empty result has no "items" key at all: callers must handle None.
            out["items"] = page
        if has_more:
            raw = f"{offset + page_size}:{digest}".encode()
            out["page_token"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        return out

    @staticmethod
    def _decode_page_token(token: str, digest: str) -> int:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            offset_text, token_digest = raw.split(":", 1)
            offset = int(offset_text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_param("page_token is invalid") from exc
        if token_digest != digest or offset < 0:
            raise bad_param("page_token does not belong to this query")
        return offset

    # ---- filter ----------------------------------------------------------------------------

    def _compile_filter(self, table: Table, flt: Any) -> Callable[[Record], bool]:
        if flt is None:
            return lambda record: True
        if not isinstance(flt, dict):
            raise bad_filter("filter must be an object")
        children = flt.get("children") or []
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            raise bad_filter("children must be a list of objects")
        total = len(_conditions_of(flt)) + sum(len(_conditions_of(c)) for c in children)
        if total > MAX_CONDITIONS:
            raise bad_filter(f"at most {MAX_CONDITIONS} conditions")
        if len(json.dumps(flt, ensure_ascii=False, separators=(",", ":"))) > MAX_FILTER_CHARS:
            raise ApiError(1254107, f"filter exceeds {MAX_FILTER_CHARS} characters")
        top = self._compile_group(table, flt)
        subs = [self._compile_child(table, child) for child in children]
        combine = all if flt.get("conjunction") == "and" else any
        if not subs:
            return top
        if not flt.get("conditions"):
            return lambda r: combine(s(r) for s in subs)
        return lambda r: combine([top(r), *(s(r) for s in subs)])

    def _compile_child(self, table: Table, child: Any) -> Callable[[Record], bool]:
        if "children" in child:
            raise bad_filter("only one level of children is supported")
        return self._compile_group(table, child)

    def _compile_group(self, table: Table, group: dict[str, Any]) -> Callable[[Record], bool]:
        conjunction = group.get("conjunction")
        if conjunction not in ("and", "or"):
            raise bad_filter("conjunction must be 'and' or 'or'")
        preds = [self._compile_condition(table, c) for c in _conditions_of(group)]
        combine = all if conjunction == "and" else any
        if not preds:
            return lambda record: True
        return lambda record: combine(p(record) for p in preds)

    def _compile_condition(self, table: Table, cond: Any) -> Callable[[Record], bool]:
        if not isinstance(cond, dict):
            raise bad_filter("each condition must be an object")
        fld = table.require_field(cond.get("field_name"))
        op = cond.get("operator")
        if op not in OPERATORS:
            raise bad_filter(f"unknown operator {op!r}")
        values = cond.get("value")
        values = [] if values is None else values
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise bad_filter('value must be an array of strings (numbers as "23.4")')
        if op in ("isEmpty", "isNotEmpty"):
            if values:
                raise bad_filter(f"{op} takes value []")
            want_empty = op == "isEmpty"
            return lambda r: (self._cell(fld, r) in (None, "", [])) == want_empty
        if not values:
            raise bad_filter(f"{op} needs a value")
        if fld.type in DATE_TYPES:
            return self._date_condition(fld, op, values)
        if fld.type == NUMBER:
            return self._number_condition(fld, op, values)
        if fld.type in STRING_TYPES:
            return self._text_condition(fld, op, values)
        if fld.type == MULTI_SELECT:
            return self._multi_condition(fld, op, values)
        if fld.type == CHECKBOX and op == "is" and values[0] in ("true", "false"):
            want = values[0] == "true"
            return lambda r: bool(self._cell(fld, r)) == want
        raise bad_filter(f"operator {op!r} is not supported for field {fld.field_name!r}")

    def _text_condition(self, fld: Field, op: str, values: list[str]) -> Callable[[Record], bool]:
        if op not in TEXT_OPERATORS:
            raise bad_filter(f"operator {op!r} is not supported for text field {fld.field_name!r}")

        def cell(r: Record) -> str:
            return text_of(fld, self._cell(fld, r))

        if op == "is":
            return lambda r: cell(r) in values
        if op == "isNot":
            return lambda r: cell(r) not in values
        if op == "contains":
            return lambda r: any(v in cell(r) for v in values)
        return lambda r: not any(v in cell(r) for v in values)

    def _number_condition(self, fld: Field, op: str, values: list[str]) -> Callable[[Record], bool]:
        if op not in NUMBER_OPERATORS:
            raise bad_filter(f"operator {op!r} is not supported for number field")
        try:
            target = float(values[0])
        except ValueError as exc:
            raise bad_filter(f"{values[0]!r} is not a number") from exc
        compare: dict[str, Callable[[float], bool]] = {
            "is": lambda x: x == target,
            "isGreater": lambda x: x > target,
            "isGreaterEqual": lambda x: x >= target,
            "isLess": lambda x: x < target,
            "isLessEqual": lambda x: x <= target,
        }
        if op == "isNot":
            return lambda r: self._cell(fld, r) is None or self._cell(fld, r) != target
        check = compare[op]
        return lambda r: self._cell(fld, r) is not None and check(float(self._cell(fld, r)))

    def _date_condition(self, fld: Field, op: str, values: list[str]) -> Callable[[Record], bool]:
        if op not in DATE_OPERATORS:
            raise bad_filter(f"operator {op!r} is not supported for date field {fld.field_name!r}")
        start = self._resolve_day(values)
        end = self._midnight_ms(
            datetime.fromtimestamp(start / 1000, self._tz).date() + timedelta(days=1)
        )

        def check(r: Record) -> bool:
            cell = self._cell(fld, r)
            if cell is None:
                return False
            if op == "is":
                return start <= cell < end
            if op == "isGreater":
                return cell >= end
            return cell < start  # isLess

        return check

    def _resolve_day(self, values: list[str]) -> int:
        """A date filter value -> 00:00 of that day in the document's timezone (ms)."""
        kind = values[0]
        if kind == "ExactDate":
            if len(values) != 2 or not values[1].lstrip("-").isdigit():
                raise bad_filter('ExactDate takes ["ExactDate", "<ms timestamp>"]')
            return self._day_start_ms(int(values[1]))
        today = datetime.fromtimestamp(self.clock(), self._tz).date()
        offsets = {"Today": 0, "Yesterday": -1, "Tomorrow": 1}
        if kind in offsets and len(values) == 1:
            return self._midnight_ms(today + timedelta(days=offsets[kind]))
        raise bad_filter(f"unsupported date value {values!r} (ExactDate/Today/Yesterday/Tomorrow)")

    def _multi_condition(self, fld: Field, op: str, values: list[str]) -> Callable[[Record], bool]:
        if op not in TEXT_OPERATORS:
            raise bad_filter(f"operator {op!r} is not supported for multi-select field")

        def cell(r: Record) -> set[str]:
            return set(self._cell(fld, r) or [])

        if op == "is":
            return lambda r: cell(r) == set(values)
        if op == "isNot":
            return lambda r: cell(r) != set(values)
        if op == "contains":
            return lambda r: bool(cell(r) & set(values))
        return lambda r: not cell(r) & set(values)

    def _sorted(self, table: Table, records: list[Record], sort: Any) -> list[Record]:
        if sort is None:
            return records
        if not isinstance(sort, list) or not all(isinstance(s, dict) for s in sort):
            raise ApiError(1254018, "InvalidSort: sort must be a list of {field_name, desc}")
        keys = [(table.require_field(s.get("field_name")), bool(s.get("desc"))) for s in sort]
        result = list(records)
        # Stable sorts applied last-key-first; empty cells stay at the end either way.
        for fld, desc in reversed(keys):
            filled = [r for r in result if self._cell(fld, r) is not None]
            empty = [r for r in result if self._cell(fld, r) is None]
            filled.sort(key=lambda r, f=fld: _sort_key(f, self._cell(f, r)), reverse=desc)
            result = filled + empty
        return result

    # ========================================================================================
    # IM
    # ========================================================================================

    def _create_message(self) -> dict[str, Any]:
        receive_id_type = request.args.get("receive_id_type")
        if receive_id_type not in RECEIVE_ID_TYPES:
            raise bad_param(f"receive_id_type must be one of {sorted(RECEIVE_ID_TYPES)}")
        body = self._body(230001)
        receive_id, msg_type, content = (body.get(k) for k in ("receive_id", "msg_type", "content"))
        if not isinstance(receive_id, str) or not receive_id:
            raise ApiError(230001, "invalid receive_id")
        uuid = self._check_uuid(body.get("uuid"))
        self._check_content(msg_type, content)
        with self._lock:
            self._im_app_limit("create")
            chat = self._resolve_chat(receive_id_type, receive_id)
            self._check_file_key(msg_type, content)
            self._im_limit(self._im_chat, chat.chat_id, "chat")
            duplicate = self._dedup(uuid)
            if duplicate is not None:
                return duplicate
            message = self._store_message(
                chat.chat_id,
                msg_type,
                content,
                "create",
                uuid,
                receive_id_type,
                receive_id,
                len(request.get_data(cache=True)),
            )
            return message.as_api(self._opts.app_id)

    def _reply_message(self, message_id: str) -> dict[str, Any]:
        body = self._body(230001)
        msg_type, content = body.get("msg_type"), body.get("content")
        in_thread = body.get("reply_in_thread", False)
        if not isinstance(in_thread, bool):
            raise ApiError(230001, "reply_in_thread must be a boolean")
        uuid = self._check_uuid(body.get("uuid"))
        self._check_content(msg_type, content)
        with self._lock:
            self._im_app_limit("reply")
            parent = self._messages.get(message_id)
            if parent is None:
                raise ApiError(230001, f"invalid message_id {message_id!r}")
            self._require_bot_in(parent.chat_id)
            self._check_file_key(msg_type, content)
            self._im_limit(self._im_chat, parent.chat_id, "chat")
            duplicate = self._dedup(uuid)
            if duplicate is not None:
                return duplicate
            message = self._store_message(
                parent.chat_id,
                msg_type,
                content,
                "reply",
                uuid,
                body_bytes=len(request.get_data(cache=True)),
            )
            message.parent_id = parent.message_id
            message.root_id = parent.root_id or parent.message_id
            if in_thread:
                parent.thread_id = parent.thread_id or self._new_id("omt_", 14, "0123456789abcdef")
                message.thread_id = parent.thread_id
            return message.as_api(self._opts.app_id)

    def _patch_message(self, message_id: str) -> dict[str, Any]:
        body = self._body(230001)
        content = body.get("content")
        self._check_content("interactive", content)
        with self._lock:
            message = self._messages.get(message_id)
            if message is None:
                raise ApiError(230001, f"invalid message_id {message_id!r}")
            if message.msg_type != "interactive":
                raise ApiError(230001, "only interactive (card) messages can be patched")
            if not card_is_shared(parse_json_or_none(message.content)):
                raise ApiError(
                    230001, "only shared cards (config.update_multi=true) can be patched"
                )
            if self.clock() - message.create_time / 1000 > CARD_EDITABLE_S:
                raise ApiError(230001, "a card can only be updated within 14 days")
            self._require_bot_in(message.chat_id)
            self._im_limit(self._im_patch, message_id, "message")
            self._new_version(message, content, "patch")
            return {}

    def _delayed_card_update(self) -> dict[str, Any]:
        body = self._body(230001)
        token, card = body.get("token"), body.get("card")
        if not isinstance(token, str) or not token:
            raise ApiError(200810, "token is required")
        refused = card_error(card)
        if refused is not None:
            raise refused
        content = json.dumps(card, ensure_ascii=False)
        size = len(request.get_data(cache=True))
        if size > CARD_LIMIT_BYTES:
            raise ApiError(
                230025,
                "The length of the message content reaches its limit "
                f"(request body {size:,} bytes, at most {CARD_LIMIT_BYTES:,})",
            )
        with self._lock:
            entry = self._card_tokens.get(token)
            fresh = entry is not None and self.clock() - entry.issued <= CARD_TOKEN_TTL_S
            if entry is None or not fresh or entry.uses >= CARD_TOKEN_USES:
                raise ApiError(200810, "token is invalid, expired, or used up (2 uses in 30 min)")
            entry.uses += 1
            self._new_version(self._messages[entry.message_id], content, "card_update")
            return {}

    def _upload_file(self) -> dict[str, Any]:
        """``POST /open-apis/im/v1/files``: multipart/form-data with file_type, file_name,
        duration (optional, ms) and file; answers ``{"file_key": ...}`` (lark-oapi 1.7.5
        ``CreateFileResponseBody``). A file part needs no filename: lark-oapi sends none."""
        form = _multipart(request.headers.get("Content-Type", ""), request.get_data(cache=True))
        if form is None:
            raise ApiError(234001, "Invalid request param: the body must be multipart/form-data")
        file_type = form.get("file_type", b"").decode("utf-8", "replace")
        file_name = form.get("file_name", b"").decode("utf-8", "replace")
        if file_type not in FILE_TYPES:
            raise ApiError(
                234001, f"Invalid request param: file_type must be one of {sorted(FILE_TYPES)}"
            )
        if not file_name.strip() or len(file_name) > FILE_NAME_MAX:
            raise ApiError(234001, "Invalid request param: file_name is required")
        duration: int | None = None
        if form.get("duration"):
            try:
                duration = int(form["duration"])
            except ValueError:
                raise ApiError(
                    234001, "Invalid request param: duration must be an integer"
                ) from None
        if "file" not in form:
            raise ApiError(234001, "Invalid request param: file is required")
        data = form["file"]
        if not data:
            raise ApiError(234010, "File's size can't be 0.")
        if len(data) > FILE_LIMIT_BYTES:
            raise ApiError(
                234006,
                f"The file size exceed the max value ({len(data):,} bytes, at most "
                f"{FILE_LIMIT_BYTES:,})",
            )
        with self._lock:
            self._im_app_limit("file")
            key = "file_v3_" + self._new_id("", 8, "0123456789abcdef") + "-" + secrets.token_hex(8)
            self._files[key] = UploadedFile(
                key, file_type, file_name, data, duration, self._now_ms()
            )
            self._counters["files_uploaded"] += 1
        return {"file_key": key}

    def _is_in_chat(self, chat_id: str) -> dict[str, Any]:
        """Is the caller (with a tenant token: the bot) a member of ``chat_id``?

        The platform's contract (open.feishu.cn → server-docs/group/chat-member/is_in_chat;
        lark-oapi 1.7.5 ``IsInChatChatMembersRequest`` / ``...ResponseBody.is_in_chat``): a chat
        the bot is not in is an answer (``is_in_chat: false``), not an error; an id that names
        no chat is 232006, a dissolved group 232009 (both HTTP 400)."""
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                raise ApiError(232006, CODE_MESSAGES[232006])
            if chat.dissolved:
                raise ApiError(232009, CODE_MESSAGES[232009])
            return {"is_in_chat": chat.bot_member}

    # ---- IM helpers ------------------------------------------------------------------------

    def _im_app_limit(self, api: str) -> None:
        """1,000 a minute and 50 a second per app and API: the gateway answers 429/99991400
        with how long to wait (caller holds the lock)."""
        for window in self._im_app:
            wait = window.admit(api)
            if wait:
                raise ApiError(
                    99991400,
                    CODE_MESSAGES[99991400],
                    headers={
                        "x-ogw-ratelimit-limit": str(window.limit),
                        "x-ogw-ratelimit-reset": reset_header(wait),
                    },
                )

    def _im_limit(self, window: Window, key: str, per: str) -> None:
        """5 a second per chat (send, reply) or per message (patch): 230020 (caller holds the
        lock)."""
        if window.admit(key):
            raise ApiError(
                230020, f"{CODE_MESSAGES[230020]} (at most {window.limit} a second per {per})"
            )

    @staticmethod
    def _check_uuid(uuid: Any) -> str | None:
        if uuid is None or uuid == "":
            return None
        if not isinstance(uuid, str) or len(uuid) > UUID_MAX_LEN:
            raise bad_param(f"uuid must be a string of at most {UUID_MAX_LEN} characters")
        return uuid

    @staticmethod
    def _check_content(msg_type: Any, content: Any) -> None:
        if msg_type not in MSG_TYPES:
            raise ApiError(230001, f"invalid msg_type {msg_type!r}")
        if not isinstance(content, str):
            raise ApiError(230001, "content must be a JSON string (json.dumps the object)")
        size = len(request.get_data(cache=True))  # the raw body, as the platform measures it
        limit = TEXT_LIMIT_BYTES if msg_type == "text" else CARD_LIMIT_BYTES
        if size > limit:
            raise ApiError(
                230025,
                "The length of the message content reaches its limit "
                f"(request body {size:,} bytes, at most {limit:,})",
            )
        parsed = parse_json_or_none(content)
        if not isinstance(parsed, dict):
            raise ApiError(230001, "content is not a valid JSON object string")
        if msg_type == "text" and not isinstance(parsed.get("text"), str):
            raise ApiError(230001, 'text content must be {"text": "..."}')
        if msg_type == "interactive":
            refused = card_error(parsed)
            if refused is not None:
                raise refused
        if msg_type == "post" and not parsed:
            raise ApiError(230001, "post content is empty")
        if msg_type == "file" and not isinstance(parsed.get("file_key"), str):
            raise ApiError(230001, 'file content must be {"file_key": "..."}')

    def _check_file_key(self, msg_type: Any, content: str) -> None:
        """A file message sends a file this app uploaded (caller holds the lock)."""
        if msg_type != "file":
            return
        key = json.loads(content)["file_key"]
        if key not in self._files:
            raise ApiError(230001, f"invalid file_key {key!r}: upload the file first (im/v1/files)")

    def _resolve_chat(self, receive_id_type: str, receive_id: str) -> Chat:
        if receive_id_type == "chat_id":
            self._require_bot_in(receive_id)
            return self._chats[receive_id]
        # A direct message to a user: the p2p chat with the bot exists implicitly.
        chat_id = "oc_p2p_" + hashlib.sha1(receive_id.encode()).hexdigest()[:24]
        if chat_id not in self._chats:
            self._chats[chat_id] = Chat(chat_id, receive_id, True, "p2p")
        return self._chats[chat_id]

    def _require_bot_in(self, chat_id: str) -> None:
        chat = self._chats.get(chat_id)
        if chat is None or not chat.bot_member:
            raise ApiError(230002, "Bot/User can NOT be out of the chat.")

    def _dedup(self, uuid: str | None) -> dict[str, Any] | None:
        """The first message sent with this uuid in the last hour, if any."""
        if uuid is None:
            return None
        seen = self._uuids.get(uuid)
        if seen is None or self.clock() - seen[1] > UUID_WINDOW_S:
            return None
        self._counters["message_dedups"] += 1
        return self._messages[seen[0]].as_api(self._opts.app_id)

    def _store_message(
        self,
        chat_id: str,
        msg_type: str,
        content: str,
        via: str,
        uuid: str | None,
        receive_id_type: str = "chat_id",
        receive_id: str = "",
        body_bytes: int | None = None,  # the raw request body that sent it (None: not an API call)
    ) -> Message:
        now = self._now_ms()
        message = Message(
            message_id=self._new_id("om_", 32, "0123456789abcdef"),
            chat_id=chat_id,
            msg_type=msg_type,
            content=content,
            create_time=now,
            update_time=now,
            via=via,
            receive_id_type=receive_id_type,
            receive_id=receive_id or chat_id,
            uuid=uuid,
            versions=[
                {
                    "content": parse_json_or_none(content),
                    "at": now,
                    "via": via,
                    "body_bytes": body_bytes,
                }
            ],
        )
        self._messages[message.message_id] = message
        if uuid is not None:
            self._uuids[uuid] = (message.message_id, self.clock())
        self._counters["messages_sent"] += 1
        return message

    def _new_version(self, message: Message, content: str, via: str) -> None:
        now = self._now_ms()
        message.content = content
        message.update_time = now
        message.versions.append(
            {
                "content": parse_json_or_none(content),
                "at": now,
                "via": via,
                "body_bytes": len(request.get_data(cache=True)),  # what this update sent
            }
        )
        self._counters["messages_patched"] += 1

    # ========================================================================================
    # Bot identity and chat info
    # ========================================================================================

    def _bot_info(self) -> Reply:
        """``GET /open-apis/bot/v3/info``: unlike most APIs, ``bot`` sits at the top level of
        the answer, not under ``data`` (the platform's response table; lark-oapi 1.7.5 has no
        model for it and reads it raw, ``lark_oapi/channel/bot_identity.py``)."""
        with self._lock:
            bot = {
                "activate_status": 2,  # 2: activated
                "app_name": self._opts.bot_name,
                "avatar_url": "https://s1-imfile.feishucdn.com/static-resource/v1/sandbox-bot",
                "ip_white_list": [],
                "open_id": self._opts.bot_open_id,
            }
        return Reply({"code": 0, "msg": "ok", "bot": bot})

    def _get_chat(self, chat_id: str) -> dict[str, Any]:
        """``GET /open-apis/im/v1/chats/:chat_id`` (im-v1 chat/get). ``chat_mode`` is group,
        topic or p2p; a p2p chat carries no owner, permissions or ``chat_type``; a chat the bot
        is not in answers only its basic information (name, avatar), as the platform's notes
        say; an unknown id is 232006."""
        self._check_user_id_type()
        with self._lock:
            chat = self._chats.get(chat_id)
            if chat is None:
                raise ApiError(232006, "Your request specifies a chat_id which is invalid.")
            basic: dict[str, Any] = {
                "avatar": "https://p3-lark-file.byteimg.com/img/sandbox-chat-avatar.jpg",
                "name": chat.name,
                "description": "",
                "i18n_names": {"zh_cn": chat.name, "en_us": chat.name, "ja_jp": ""},
            }
            if not chat.bot_member:
                return basic
            info = {
                **basic,
                "edit_permission": "all_members",
                "chat_mode": chat.chat_type,
                "external": False,
                "tenant_key": TENANT_KEY,
                "user_count": "1" if chat.chat_type == "p2p" else "5",
                "bot_count": "1",
                "chat_status": "normal",
            }
            if chat.chat_type != "p2p":
                info.update(
                    {
                        "add_member_permission": "all_members",
                        "share_card_permission": "allowed",
                        "at_all_permission": "all_members",
                        "owner_id_type": request.args.get("user_id_type", "open_id"),
                        "owner_id": "ou_" + hashlib.md5(chat_id.encode()).hexdigest(),
                        "chat_type": "private",
                        "chat_tag": "inner",
                        "group_message_type": "chat" if chat.chat_type == "group" else "thread",
                        "membership_approval": "no_approval_required",
                        "moderation_permission": "all_members",
                    }
                )
            return info

    # ========================================================================================
    # Custom bot webhook
    # ========================================================================================

    def _hook(self, hook_id: str) -> Reply:
        raw = request.get_data(cache=True)
        with self._lock:
            hook = self._hooks.get(hook_id)
        if hook is None:
            return self._hook_error(19001, "param invalid: incoming webhook access token invalid")
        if len(raw) > HOOK_BODY_LIMIT:
            return self._hook_error(9499, "Bad Request: request body exceeds 20 KB")
        body = parse_json_or_none(raw.decode("utf-8", "replace"))
        if not isinstance(body, dict):
            return self._hook_error(9499, "Bad Request")
        if hook.secret is not None and not self._hook_signed(body, hook.secret):
            return self._hook_error(19021, MSG_HOOK_SIGN)
        problem = _hook_payload_problem(body)
        if problem:
            return self._hook_error(9499, f"Bad Request: {problem}")
        entry = {
            "msg_type": body["msg_type"],
            "content": body.get("content"),
            "card": body.get("card"),
            "timestamp": body.get("timestamp"),
            "received_at": self._now_ms(),
            "body_bytes": len(raw),
        }
        with self._lock:
            hook.messages.append(entry)
            self._counters["hook_messages"] += 1
        return Reply(
            {
                "StatusCode": 0,
                "StatusMessage": "success",
                "code": 0,
                "data": {},
                "msg": "success",
            }
        )

    def _hook_signed(self, body: dict[str, Any], secret: str) -> bool:
        timestamp, sign = body.get("timestamp"), body.get("sign")
        if not isinstance(sign, str) or timestamp is None:
            return False
        text = str(timestamp)
        if not text.isdigit() or abs(self.clock() - int(text)) > HOOK_TIMESTAMP_WINDOW_S:
            return False
        return hmac.compare_digest(sign, hook_sign(text, secret))

    def _hook_error(self, code: int, msg: str) -> Reply:
        # Custom bots answer HTTP 200 and put the failure in the body.
        with self._lock:
            self._errors[str(code)] += 1
        return Reply({"code": code, "msg": msg, "data": {}})

    # ========================================================================================
    # Control routes
    # ========================================================================================

    def _register_control(self, app: Flask) -> None:
        base = "/_sandbox/feishu"
        routes: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", base + "/messages", self._ctl_messages),
            ("GET", base + "/files/<file_key>", self._ctl_file),
            ("GET", base + "/tables/<app_token>/<table_id>", self._ctl_table),
            ("DELETE", base + "/tables/<app_token>/<table_id>", self._ctl_delete_table),
            ("GET", base + "/tables/<app_token>", self._ctl_tables),
            ("POST", base + "/tables", self._ctl_put_table),
            ("GET", base + "/views/<app_token>/<table_id>", self._ctl_views),
            ("POST", base + "/views/<app_token>/<table_id>", self._ctl_add_view),
            ("PATCH", base + "/views/<app_token>/<table_id>/<view_id>", self._ctl_rename_view),
            ("DELETE", base + "/views/<app_token>/<table_id>/<view_id>", self._ctl_delete_view),
            ("POST", base + "/chats", self._ctl_chat),
            ("POST", base + "/hooks", self._ctl_hook),
            ("GET", base + "/hooks/<hook_id>/messages", self._ctl_hook_messages),
            ("POST", base + "/card_token", self._ctl_card_token),
            ("POST", base + "/revoke_tokens", self._ctl_revoke_tokens),
            ("POST", base + "/user_message", self._ctl_user_message),
        ]
        for method, rule, handler in routes:
            app.add_url_rule(
                rule,
                endpoint=f"feishu.ctl.{handler.__name__}",
                view_func=self._control_view(handler),
                methods=[method],
            )

    def _control_view(self, handler: Callable[..., Any]) -> Callable[..., Response]:
        def view(**kwargs: Any) -> Response:
            try:
                result = handler(**kwargs)
            except ControlError as exc:
                return self._json({"ok": False, "error": str(exc)}, 400)
            if isinstance(result, Response):
                return result
            if isinstance(result, Reply):
                return self._json(result.body, result.status)
            return self._json(result)

        return view

    @staticmethod
    def _control_body() -> dict[str, Any]:
        data = request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise ControlError("body must be a JSON object")
        return data

    def _ctl_user_message(self) -> dict[str, Any]:
        """A person posts in a chat (what the platform then delivers as an event); the bot
        can reply to it. Body: {chat_id, text, user_id?}. Listed with via "user"."""
        spec = self._control_body()
        chat_id, text = spec.get("chat_id"), spec.get("text")
        if not isinstance(chat_id, str) or not isinstance(text, str):
            raise ControlError("chat_id and text must be strings")
        with self._lock:
            if chat_id not in self._chats:
                raise ControlError(f"unknown chat {chat_id!r}")
            content = json.dumps({"text": text}, ensure_ascii=False)
            message = self._store_message(chat_id, "text", content, "user", None)
            return {
                "message_id": message.message_id,
                "chat_id": chat_id,
                "create_time": message.create_time,
            }

    def _ctl_messages(self) -> dict[str, Any]:
        chat_id = request.args.get("chat_id")
        with self._lock:
            messages = []
            for m in self._messages.values():
                if chat_id is not None and m.chat_id != chat_id:
                    continue
                shown = m.as_control()
                if m.msg_type == "file":
                    uploaded = self._files.get((shown["content"] or {}).get("file_key", ""))
                    shown["file"] = uploaded.describe() if uploaded else None
                messages.append(shown)
        return {"messages": messages}

    def _ctl_file(self, file_key: str) -> Response:
        with self._lock:
            uploaded = self._files.get(file_key)
        if uploaded is None:
            return self._json({"ok": False, "error": "no such file"}, 404)
        response = Response(uploaded.data, 200, content_type="application/octet-stream")
        response.headers["X-File-Name"] = uploaded.file_name.encode().decode("latin-1")
        response.headers["X-File-Type"] = uploaded.file_type
        return response

    def _ctl_table(self, app_token: str, table_id: str) -> dict[str, Any] | Reply:
        with self._lock:
            table = self._tables.get((app_token, table_id))
            if table is None:
                return Reply({"ok": False, "error": "no such table"}, 404)
            return self._table_snapshot(table)

    def _ctl_delete_table(self, app_token: str, table_id: str) -> dict[str, Any] | Reply:
        """A person deletes the table in the Base (what the API then answers with 1254041)."""
        with self._lock:
            if (app_token, table_id) not in self._tables:
                return Reply({"ok": False, "error": "no such table"}, 404)
            self._drop_table(app_token, table_id)
        return {"ok": True}

    def _ctl_tables(self, app_token: str) -> dict[str, Any]:
        with self._lock:
            tables = [
                {"table_id": t.table_id, "name": t.name, "records": len(t.records)}
                for t in self._tables_of(app_token)
            ]
        return {"tables": tables}

    def _table_snapshot(self, table: Table) -> dict[str, Any]:
        records = []
        for record in table.records.values():
            fields = {
                f.field_name: copy.deepcopy(v)
                for f in table.fields
                if (v := self._cell(f, record)) is not None
            }
            records.append({"record_id": record.record_id, "fields": fields})
        return {
            "app_token": table.app_token,
            "table_id": table.table_id,
            "name": table.name,
            "fields": [f.as_api() for f in table.fields],
            "records": records,
        }

    def _ctl_table_or_error(self, app_token: str, table_id: str) -> Table:
        table = self._tables.get((app_token, table_id))
        if table is None:
            raise ControlError("no such table")
        return table

    def _ctl_views(self, app_token: str, table_id: str) -> dict[str, Any]:
        with self._lock:
            table = self._ctl_table_or_error(app_token, table_id)
            return {"views": [v.full() for v in table.views.values()]}

    def _ctl_add_view(self, app_token: str, table_id: str) -> dict[str, Any]:
        """A person makes a view in the Base: {view_name, view_type?, filter?: {field name:
        value}} (each an ``is`` condition, joined by and)."""
        spec = self._control_body()
        with self._lock:
            table = self._ctl_table_or_error(app_token, table_id)
            try:
                listed = self._add_view(table, spec.get("view_name"), spec.get("view_type"))
            except ApiError as exc:
                raise ControlError(f"{exc.code} {exc.msg}") from None
            view = table.views[listed["view_id"]]
            wanted = spec.get("filter") or {}
            if not isinstance(wanted, dict):
                raise ControlError("filter must be {field name: value}")
            conditions = []
            for name, value in wanted.items():
                fld = table.field_by_name(name)
                if fld is None:
                    raise ControlError(f"no field {name!r}")
                conditions.append(
                    {
                        "condition_id": self._new_id("con"),
                        "field_id": fld.field_id,
                        "field_type": fld.type,
                        "operator": "is",
                        "value": json.dumps([str(value)], ensure_ascii=False),
                    }
                )
            if conditions:
                view.filter_info = {
                    "conjunction": "and",
                    "conditions": conditions,
                    "condition_omitted": False,
                }
            return {"ok": True, "view": view.full()}

    def _ctl_rename_view(self, app_token: str, table_id: str, view_id: str) -> dict[str, Any]:
        spec = self._control_body()
        with self._lock:
            table = self._ctl_table_or_error(app_token, table_id)
            view = table.views.get(view_id)
            if view is None:
                raise ControlError("no such view")
            taken = {v.view_name for v in table.views.values() if v is not view}
            try:
                view.view_name = check_view_name(spec.get("view_name"), taken)
            except ViewProblem as exc:
                raise ControlError(f"{exc.code} {exc.msg}") from None
            return {"ok": True, "view": view.full()}

    def _ctl_delete_view(self, app_token: str, table_id: str, view_id: str) -> dict[str, Any]:
        with self._lock:
            table = self._ctl_table_or_error(app_token, table_id)
            if table.views.pop(view_id, None) is None:
                raise ControlError("no such view")
            return {"ok": True}

    def _ctl_put_table(self) -> dict[str, Any]:
        spec = self._control_body()
        with self._lock:
            table = self._install_table(spec)
            return {"ok": True, "table": self._table_snapshot(table)}

    def _ctl_chat(self) -> dict[str, Any]:
        spec = self._control_body()
        with self._lock:
            chat = self._add_chat(spec)
        return {
            "ok": True,
            "chat": {
                "chat_id": chat.chat_id,
                "bot_member": chat.bot_member,
                "chat_mode": chat.chat_type,
                "dissolved": chat.dissolved,
            },
        }

    def _ctl_hook(self) -> dict[str, Any]:
        spec = self._control_body()
        hook_id = spec.get("hook_id") or secrets.token_hex(16)
        secret = spec.get("secret")
        if not isinstance(hook_id, str) or (secret is not None and not isinstance(secret, str)):
            raise ControlError("hook_id and secret must be strings")
        path = f"/open-apis/bot/v2/hook/{hook_id}"
        with self._lock:
            self._hooks[hook_id] = Hook(hook_id, secret or None)
        return {
            "ok": True,
            "hook_id": hook_id,
            "path": path,
            "url": request.host_url.rstrip("/") + path,
        }

    def _ctl_hook_messages(self, hook_id: str) -> dict[str, Any] | Reply:
        with self._lock:
            hook = self._hooks.get(hook_id)
            if hook is None:
                return Reply({"ok": False, "error": "no such hook"}, 404)
            return {"messages": copy.deepcopy(hook.messages)}

    def _ctl_card_token(self) -> dict[str, Any]:
        message_id = self._control_body().get("message_id")
        with self._lock:
            message = self._messages.get(str(message_id))
            if message is None or message.msg_type != "interactive":
                raise ControlError("message_id must name an interactive message")
            token = "c-" + secrets.token_hex(16)
            self._card_tokens[token] = CardToken(message.message_id, self.clock())
        return {"ok": True, "token": token}

    def _ctl_revoke_tokens(self) -> dict[str, Any]:
        with self._lock:
            revoked = len(self._tokens)
            self._tokens.clear()
            self._current_token = None
        return {"ok": True, "revoked": revoked}


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def _multipart(content_type: str, body: bytes) -> dict[str, bytes] | None:
    """The fields of a multipart/form-data body, exactly as sent (files are bytes, untouched:
    werkzeug would decode a part without a filename as text). None if it is not one."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return None
    fields: dict[str, bytes] = {}
    delimiter = b"--" + boundary.encode("latin-1")
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            return None
        match = re.search(rb'(?i)content-disposition:[^\r\n]*?\bname="([^"]*)"', head)
        if match is None:
            return None
        fields[match.group(1).decode("utf-8", "replace")] = content.removesuffix(b"\r\n")
    return fields


def _conditions_of(group: dict[str, Any]) -> list[Any]:
    conditions = group.get("conditions") or []
    if not isinstance(conditions, list):
        raise bad_filter("conditions must be a list")
    return conditions


def _drop_empty(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _ensure_option(fld: Field, name: str) -> None:
    """Writing an unknown option to a select field creates it, as the platform does."""
    prop = fld.property if fld.property is not None else {"options": []}
    options = prop.setdefault("options", [])
    if not any(o.get("name") == name for o in options):
        options.append(
            {"name": name, "id": f"opt{len(options) + 1:07d}", "color": len(options) % 54}
        )
    fld.property = prop


def _sort_key(fld: Field, value: Any) -> Any:
    if fld.type == MULTI_SELECT:
        return ",".join(value)
    if fld.type in STRING_TYPES:
        return text_of(fld, value)
    if isinstance(value, bool):
        return int(value)
    return value


def _hook_payload_problem(body: dict[str, Any]) -> str | None:
    msg_type = body.get("msg_type")
    content = body.get("content")
    if msg_type == "interactive":
        card = body.get("card")
        return card_problem(card) if isinstance(card, dict) else "interactive needs a card object"
    if not isinstance(content, dict):
        return "content must be an object"
    required = {"text": "text", "post": "post", "image": "image_key", "share_chat": "share_chat_id"}
    if msg_type not in required:
        return f"unsupported msg_type {msg_type!r}"
    if required[msg_type] not in content:
        return f"{msg_type} content needs {required[msg_type]}"
    return None
