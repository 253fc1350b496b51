"""A faithful, strict simulator of the Ocean Engine (巨量引擎) Open API for 本地推 accounts.

What it simulates (see /work/shared/reference/oceanengine.md for the sources):

- the authorization page ``/audit/oauth.html`` (a user who ticks every account and consents),
- users: authorization is per Ocean Engine user ("API授权是以User为纬度的", reference §1.1), so
  each user has a grant of their own; re-authorizing replaces only that user's grant, revoking
  one leaves the others alive, and one account may be granted by several users. The page
  consents as the user logged in (the ``oe_sandbox_user`` cookie, or the one set with
  ``/_sandbox/oceanengine/login``); minted codes name theirs with ``user``,
- ``oauth2/access_token`` (single-use auth codes, 10 minutes), ``oauth2/refresh_token`` (strict
  rotation, no grace window), ``oauth2/advertiser/get`` (``account_type``, ``is_valid``) and
  ``2/user/info``,
- the kinds of authorization a real user grants (minted through ``/_sandbox/oceanengine/
  auth_code`` with ``grants``): 本地推 accounts ticked directly; a 巨量工作台 organisation
  (CUSTOMER_ADMIN / CUSTOMER_OPERATOR) listed by ``v3.0/customer_center/account/list``; a 抖音来客
  account (PLATFORM_ROLE_LIFE) listed by ``v3.0/local/life/advertiser/list``; agents and other
  types that manage accounts nobody can list; a company's 巨量广告 广告主 id, which the local report
  refuses ("账户ID错误"); accounts whose relationship was removed (``is_valid: false``),
- ``v3.0/local/report/{promotion,project,account}/get`` with the real parameter rules: the
  ``Access-Token`` header, JSON-encoded ``metrics``/``filtering``, page sizes 10/20/50/100,
  365-day windows, 19-digit ids as exact JSON integers.

Report numbers are a pure function of (seed, account, promotion, date), so any range can be
asked for in any order and the answer never changes unless a control route says so (``adjust``).
The reset option ``dense: true`` makes a regular world for load tests: every account has exactly
``promotions_per_account`` promotions, each with a row on every day a report can reach.
Every envelope is HTTP 200 with a business ``code``; injected HTTP faults look like a gateway.

Control routes live under ``/_sandbox/oceanengine/``; they never reveal a token (``issued`` gives
salted hashes of every token and code issued, for leak scans).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from flask import Flask, Response, request
from werkzeug.http import HTTP_STATUS_CODES

from adsync.sandbox.faults import Fault, FaultInjector

SHANGHAI = ZoneInfo("Asia/Shanghai")
AUTH_CODE_LIFETIME = 600  # "只有10分钟有效期，且只能使用一次"
LEAK_PREFIX = 8  # /_sandbox/oceanengine/issued: the shortest token prefix that counts as a leak
MAX_SPAN_DAYS = 365
MAX_HOURLY_SPAN_DAYS = 7
PAGE_SIZES = (10, 20, 50, 100)

DAILY = "TIME_GRANULARITY_DAILY"
HOURLY = "TIME_GRANULARITY_HOURLY"
TOTAL = "TIME_GRANULARITY_TOTAL"
GRANULARITIES = (DAILY, HOURLY, TOTAL)

# Real messages where the notes record them (40104, 40110); otherwise short English + Chinese.
MESSAGES: dict[int, str] = {
    40001: "参数错误 Invalid parameter",
    40002: "没有权限进行相关操作 No permission for this operation",
    40003: "过滤条件的field字段错误 Invalid filtering field",
    40100: "请求过于频繁 Too many requests",
    40101: "不合法的接入用户 Invalid app_id or secret",
    40102: "access_token已过期 The access_token has expired",
    40103: "refresh_token已过期，请重新授权 The refresh_token has expired",
    40104: "The access_token is empty.",
    40105: "access_token错误 The access_token is invalid",
    40107: "refresh_token错误 The refresh_token is invalid",
    40108: "授权类型错误 Invalid grant_type",
    40110: "auth_code已过期，请重新授权",
    50000: "系统错误 System error, please retry",
}


class ApiError(Exception):
    """A business error: rendered as HTTP 200 with ``code`` and ``data: {}``."""

    def __init__(self, code: int, detail: str = "", *, message: str = "") -> None:
        base = MESSAGES.get(code, "error")
        # 40104 and 40110 are verbatim real messages; keep them exact.
        self.code = code
        self.message = message or (
            f"{base}: {detail}" if detail and code not in (40104, 40110) else base
        )
        super().__init__(self.message)


def _param_error(detail: str) -> ApiError:
    return ApiError(40001, detail)


# Every account_type of oauth2/advertiser/get (official SDK oceanengine/ad_open_sdk_go,
# models/model_oauth2_advertiser_get_data_list_account_type.go).
ACCOUNT_TYPES = frozenset(
    {
        "ADVERTISER",
        "AGENT",
        "AGENT_SYSTEM_ACCOUNT",
        "CHILD_AGENT",
        "CUSTOMER_ADMIN",
        "CUSTOMER_OPERATOR",
        "PLATFORM_ROLE_AD_EXCHANGE_RTB_ADMIN",
        "PLATFORM_ROLE_AD_EXCHANGE_RTB_OPERATOR",
        "PLATFORM_ROLE_AWEME",
        "PLATFORM_ROLE_ENTERPRISE_BP_ADMIN",
        "PLATFORM_ROLE_ENTERPRISE_BP_OPERATOR",
        "PLATFORM_ROLE_ENTERPRISE_BP_CUSTOM",
        "PLATFORM_ROLE_GROUP_BP_ADMIN",
        "PLATFORM_ROLE_GROUP_BP_OPERATOR",
        "PLATFORM_ROLE_LIFE",
        "PLATFORM_ROLE_LOCAL_AGENT",
        "PLATFORM_ROLE_QIANCHUAN_AGENT",
        "PLATFORM_ROLE_SHOP_ACCOUNT",
        "PLATFORM_ROLE_STAR",
        "PLATFORM_ROLE_STAR_AGENT",
        "PLATFORM_ROLE_STAR_ISV",
        "PLATFORM_ROLE_STAR_MCN",
        "PLATFORM_ROLE_YUNTU_BRAND_ISV_ADMIN",
    }
)
ORGANISATION_TYPES = frozenset({"CUSTOMER_ADMIN", "CUSTOMER_OPERATOR"})  # 巨量工作台
LIFE_TYPE = "PLATFORM_ROLE_LIFE"  # 抖音来客
CUSTOMER_CENTER_LIST = "/open_api/v3.0/customer_center/account/list/"
LIFE_ADVERTISER_LIST = "/open_api/v3.0/local/life/advertiser/list/"
# customer_center/account/list: page_size "默认值10，取值范围[1,100] 仅支持查询前10000条数据，即
# page*page_size≤10000" (api/api_customer_center_account_list_v30.go); filter.account_type has
# no omitempty (required): AD | LOCAL | QIANCHUAN
# (models/model_customer_center_account_list_v3_0_filter{,_account_type}.go).
CC_ACCOUNT_TYPES = ("AD", "LOCAL", "QIANCHUAN")
CC_FILTER_KEYS = frozenset({"account_ids", "account_name", "account_tag", "account_type"})
LISTING_MAX_PAGE_SIZE = 100
CC_LISTING_LIMIT = 10_000
# local/life/advertiser/list: "每页条数，默认10，最大100"; filtering.local_account_role ALL |
# DIRECT_ACCOUNT | VIRTUAL_ACCOUNT (models/model_local_life_advertiser_list_v3_0_filtering*.go).
LIFE_ROLES = ("ALL", "DIRECT_ACCOUNT", "VIRTUAL_ACCOUNT")
# What the local report says for an id that is a 巨量广告 广告主, not a 本地推 account: the ktao
# project saw "账户ID错误" (reference notes §1.5). The code is in no source found; a parameter
# error (40001) is the plausible family. UNVERIFIED.
NOT_LOCAL_MESSAGE = "账户ID错误 local_account_id is not a 本地推 account"


# --------------------------------------------------------------------------------------------
# Deterministic randomness


def _hash(*parts: object) -> int:
    # blake2b, not hash(): str hashes are salted per process and the data must be reproducible.
    text = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def _rng(*parts: object) -> random.Random:
    return random.Random(_hash(*parts))


# --------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class Options:
    app_id: str = "1700000000000001"
    secret: str = "sandbox-oe-secret"
    access_lifetime: int = 86399
    refresh_lifetime: int = 2591999
    accounts: int = 7
    promotions_per_account: int = 3
    seed: int = 1
    today: date | None = None
    # Load-test world: no empty account, exactly promotions_per_account promotions per account,
    # all created before the 365-day report window, never ended, never paused for a day.
    dense: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any], default_seed: int) -> Options:
        """Validate reset options; a typo must fail loudly rather than silently do nothing."""
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown oceanengine options: {sorted(unknown)}")
        values: dict[str, Any] = {"seed": default_seed}
        for name in ("access_lifetime", "refresh_lifetime", "accounts", "seed"):
            if name in raw:
                values[name] = _int_option(name, raw[name], minimum=1 if name != "seed" else None)
        if "promotions_per_account" in raw:
            values["promotions_per_account"] = _int_option(
                "promotions_per_account", raw["promotions_per_account"], minimum=0
            )
        if "app_id" in raw:
            app_id = str(raw["app_id"])
            if not app_id.isdigit():
                raise ValueError("app_id must be digits")
            values["app_id"] = app_id
        if "secret" in raw:
            if not isinstance(raw["secret"], str) or not raw["secret"]:
                raise ValueError("secret must be a non-empty string")
            values["secret"] = raw["secret"]
        if raw.get("today") is not None:
            values["today"] = _parse_date_option(raw["today"])
        if "dense" in raw:
            if not isinstance(raw["dense"], bool):
                raise ValueError("dense must be true or false")
            values["dense"] = raw["dense"]
        return cls(**values)


def _int_option(name: str, value: Any, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}")
    return value


def _parse_date_option(value: Any) -> date:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("today must be YYYY-MM-DD")
    return date.fromisoformat(value)


# --------------------------------------------------------------------------------------------
# The simulated world: accounts, promotions, daily numbers


@dataclass(frozen=True)
class Promotion:
    promotion_id: int
    promotion_name: str
    project_id: int
    project_name: str
    start: date
    end: date | None  # None: still running
    base_cost_cents: int
    budget_cents: int | None  # daily budget; real rows show capped spend like 700.0 / 1000.0
    cpm_yuan: float
    ctr: float
    cvr: float
    marketing_goal: str
    delivery_scene: str
    campaign_type: str = "GENERAL"
    delivery_mode: str = "MANUAL_MODE"


@dataclass(frozen=True)
class Account:
    account_id: int
    name: str
    promotions: tuple[Promotion, ...]


@dataclass(frozen=True)
class Counts:
    """The additive quantities of a report row; money in cents so sums stay exact."""

    cost_cents: int = 0
    show: int = 0
    click: int = 0
    convert: int = 0
    clue: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.cost_cents + other.cost_cents,
            self.show + other.show,
            self.click + other.click,
            self.convert + other.convert,
            self.clue + other.clue,
        )

    def scaled(self, factor: float) -> Counts:
        # round() is monotonic, so click <= show etc. still hold after scaling.
        return Counts(
            round(self.cost_cents * factor),
            round(self.show * factor),
            round(self.click * factor),
            round(self.convert * factor),
            round(self.clue * factor),
        )

    def any(self) -> bool:
        return bool(self.cost_cents or self.show or self.click or self.convert or self.clue)


def _ratio(num: float, den: float, scale: float) -> float:
    return round(num / den * scale, 2) if den else 0.0


# Known metric names and how each is computed from Counts. Metrics the sandbox does not model
# are accepted (a real client may ask for them) and answered with zero.
METRICS: dict[str, Callable[[Counts], int | float]] = {
    "stat_cost": lambda c: c.cost_cents / 100,
    "show_cnt": lambda c: c.show,
    "click_cnt": lambda c: c.click,
    "convert_cnt": lambda c: c.convert,
    "clue_pay_order_cnt": lambda c: c.clue,
    "attribution_convert_cnt": lambda c: c.convert,
    "ctr": lambda c: _ratio(c.click, c.show, 100),  # percent, like the platform
    "cpc_platform": lambda c: _ratio(c.cost_cents, c.click, 0.01),
    "cpm_platform": lambda c: _ratio(c.cost_cents, c.show, 10),
    "conversion_cost": lambda c: _ratio(c.cost_cents, c.convert, 0.01),
    "conversion_rate": lambda c: _ratio(c.convert, c.click, 100),
    "form_cnt": lambda c: 0,
    "clue_message_count": lambda c: 0,
    "phone_confirm_cnt": lambda c: 0,
    "message_action_cnt": lambda c: 0,
    "oto_pay_order_count": lambda c: 0,
    "oto_pay_order_amount": lambda c: 0.0,
    "dy_like": lambda c: 0,
    "total_play": lambda c: 0,
    "luban_live_enter_cnt": lambda c: 0,
}
TRUTH_METRICS = ("stat_cost", "show_cnt", "click_cnt", "convert_cnt", "clue_pay_order_cnt")

# (project word, promotion word), after the real sample's naming.
PRODUCTS = (
    ("黄金微针", "黄金微针私信"),
    ("抗衰法令纹", "抗衰超声炮法令纹"),
    ("热玛吉", "热玛吉"),
    ("水光针", "水光针补水团购"),
    ("光子嫩肤", "光子嫩肤到店"),
    ("超皮秒", "超皮秒祛斑"),
    ("玻尿酸", "玻尿酸填充私信"),
    ("双眼皮", "双眼皮私信"),
)
BRANCHES = ("郑州天后", "洛阳天后", "开封天后")
COMPANIES = (
    "郑州天后医疗美容医院有限公司",
    "洛阳天后医疗美容门诊部有限公司",
    "开封天后医疗美容诊所有限公司",
    "新乡天后医疗美容门诊部有限公司",
    "许昌天后医疗美容诊所有限公司",
)
# Relative spend per hour of the day (Beijing time): quiet nights, evening peak.
DIURNAL = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.5, 3.5, 4.0, 4.0,
    3.5, 3.5, 3.5, 3.5, 3.5, 3.8, 4.0, 4.5, 5.0, 5.0, 4.0, 2.5,
)  # fmt: skip


def _account_name(index: int) -> str:
    if index % 4 == 3:
        company = COMPANIES[(index // 4) % len(COMPANIES)]
        lap = index // (4 * len(COMPANIES))
        return f"本地推-ka-{company}" + (f"{lap + 1}" if lap else "")
    # 17 is coprime with 90, so the first 90 numbers never repeat.
    return f"菲象_{BRANCHES[index % len(BRANCHES)]}_{(index * 17) % 90 + 10}"


def _bytedance_id(when: datetime, r: random.Random) -> int:
    # ByteDance ids carry the creation second in their top 32 bits; that is why the real ones
    # are 19 digits (> 2**53) and why a project id is just below its promotion's id.
    return (int(when.timestamp()) << 32) | r.getrandbits(32)


def _make_promotion(
    r: random.Random, created: date, end: date | None, shared: Promotion | None
) -> Promotion:
    mm_dd = f"{created.month:02d}_{created.day:02d}"
    product = shared.project_name.split("_")[0] if shared else r.choice(PRODUCTS)[0]
    promo_word = next(p for proj, p in PRODUCTS if proj == product)
    if shared is None:
        project_at = datetime(created.year, created.month, created.day, tzinfo=SHANGHAI)
        project_at += timedelta(seconds=r.randint(9 * 3600, 20 * 3600))
        project_id = _bytedance_id(project_at, r)
        project_name = f"{product}_{mm_dd}" + ("_01" if r.random() < 0.4 else "")
    else:
        project_id, project_name = shared.project_id, shared.project_name
        project_at = datetime.fromtimestamp(project_id >> 32, SHANGHAI)
    promotion_at = max(
        project_at + timedelta(seconds=r.randint(60, 3600)),
        datetime(created.year, created.month, created.day, 9, tzinfo=SHANGHAI),
    )
    budget = r.choice((300, 500, 700, 800, 1000, 1500)) * 100 if r.random() < 0.35 else None
    return Promotion(
        promotion_id=_bytedance_id(promotion_at, r),
        promotion_name=f"{promo_word}_{mm_dd}",
        project_id=project_id,
        project_name=project_name,
        start=created,
        end=end,
        # log-uniform 80..1100 yuan a day, times a daily factor 0.45..1.45 => ~40..1600 yuan.
        base_cost_cents=round(math.exp(r.uniform(math.log(8_000), math.log(110_000)))),
        budget_cents=budget,
        cpm_yuan=r.uniform(72.0, 130.0),
        ctr=r.uniform(0.0025, 0.008),
        cvr=r.uniform(0.0, 0.09),
        marketing_goal="LIVE" if r.random() < 0.15 else "VIDEO_IMAGE",
        delivery_scene=r.choices(
            ("CLUE", "POI_CUSTOMER", "PURCHASE", "CONTENT_HEATING"), (5, 2, 2, 1)
        )[0],
    )


def build_account(
    seed: int, index: int, anchor: date, average: int, empty: bool, dense: bool = False
) -> Account:
    """Account ``index`` of the world: its id, name and promotion schedule relative to
    ``anchor`` (the sandbox's "today" at reset, so history stays put while the clock runs).
    ``dense``: exactly ``average`` promotions, all running on every day a report can reach."""
    r = _rng(seed, "account", index)
    account_id = 1_700_000_000_000_000 + r.randrange(160_000_000_000_000)  # 16 digits
    if dense:
        count = 0 if empty else average
    else:
        count = 0 if empty or average == 0 else r.randint(0, 2 * average)
    if index == 0 and not empty and average:
        count = max(count, 1)  # account 0 always has data, so a one-account demo shows rows
    promotions: list[Promotion] = []
    for j in range(count):
        age = r.randint(20, 90) if j == 0 else r.randint(2, 120)
        if dense:
            age += MAX_SPAN_DAYS  # created before the oldest day a report may ask for
        created = anchor - timedelta(days=age)
        shared = promotions[-1] if promotions and r.random() < 0.2 else None
        if shared is not None:
            created = max(created, shared.start)  # a project exists before its promotions
        running = dense or j == 0 or r.random() < 0.55
        end = None if running else created + timedelta(days=r.randint(5, 60))
        promotions.append(_make_promotion(r, created, end, shared))
    return Account(account_id, _account_name(index), tuple(promotions))


def build_world(options: Options, anchor: date) -> list[Account]:
    # One account has no data at all, like "菲象_郑州天后_10：无数据" in the real notes; never
    # account 0, and not when there is only one account.
    empty_index = 1 + _hash(options.seed, "empty") % max(1, options.accounts - 1)
    accounts: list[Account] = []
    for i in range(options.accounts):
        empty = options.accounts >= 2 and i == empty_index and not options.dense
        accounts.append(
            build_account(
                options.seed, i, anchor, options.promotions_per_account, empty, options.dense
            )
        )
    return _check_unique_ids(accounts)


def _check_unique_ids(accounts: list[Account]) -> list[Account]:
    seen: set[int] = set()
    for account in accounts:
        if account.account_id in seen:  # astronomically unlikely; fail loudly, never silently
            raise RuntimeError(f"duplicate account id {account.account_id}")
        seen.add(account.account_id)
    return accounts


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of an integer total; the parts always add up to ``total``."""
    if total <= 0:
        return [0] * len(weights)
    wsum = float(sum(weights))
    if wsum <= 0:
        weights, wsum = [1.0] * len(weights), float(len(weights))
    raw = [total * w / wsum for w in weights]
    parts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - parts[i], -i), reverse=True)
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


@dataclass
class Ledger:
    """Report numbers: a pure function of (seed, account, promotion, day) plus adjustments."""

    seed: int
    adjustments: dict[tuple[int, date], float] = field(default_factory=dict)
    dense: bool = False  # never paused: every live promotion has a row every day

    def full_day(self, account_id: int, p: Promotion, day: date) -> Counts | None:
        """The settled numbers of a whole day; None when the promotion has no row that day."""
        if day < p.start or (p.end is not None and day > p.end):
            return None
        r = _rng(self.seed, "day", account_id, p.promotion_id, day.isoformat())
        roll = r.random()
        if roll < 0.07 and not self.dense:
            return None  # paused for the day: no row at all
        if 0.07 <= roll < 0.10:
            counts = Counts()  # live but did not deliver: an all-zero row, as in the sample
        else:
            cost = p.base_cost_cents * r.uniform(0.45, 1.45)
            if day == p.start:
                cost *= r.uniform(0.05, 0.6)  # launched during the day
            if p.budget_cents is not None:
                cost = min(cost, p.budget_cents)
            cost_cents = max(1, round(cost))
            cpm = p.cpm_yuan * r.uniform(0.88, 1.12)
            show = max(1, round(cost_cents / 100 / cpm * 1000))
            click = min(show, round(show * p.ctr * r.uniform(0.7, 1.3)))
            convert = sum(1 for _ in range(click) if r.random() < p.cvr)
            clue = 1 if convert and r.random() < 0.08 else 0
            counts = Counts(cost_cents, show, click, convert, clue)
        factor = self.adjustments.get((account_id, day))
        return counts.scaled(factor) if factor is not None else counts

    def hours(self, account_id: int, p: Promotion, day: date, full: Counts) -> list[Counts]:
        """Split a day into 24 hours; hourly parts always add up to the day."""
        r = _rng(self.seed, "hours", account_id, p.promotion_id, day.isoformat())
        weights = [w * r.uniform(0.6, 1.4) for w in DIURNAL]
        show = _split(full.show, weights)
        cost = _split(full.cost_cents, show if full.show else weights)
        click = _split(full.click, show)
        convert = _split(full.convert, click)
        clue = _split(full.clue, click)
        return [Counts(cost[h], show[h], click[h], convert[h], clue[h]) for h in range(24)]


# --------------------------------------------------------------------------------------------
# Report queries


@dataclass(frozen=True)
class Level:
    name: str
    path: str
    list_key: str
    default_granularity: str
    id_filters: frozenset[str]


LEVELS = (
    Level(
        "promotion",
        "/open_api/v3.0/local/report/promotion/get/",
        "promotion_list",
        DAILY,
        frozenset({"promotion_ids", "cdp_project_ids"}),
    ),
    Level(
        "project",
        "/open_api/v3.0/local/report/project/get/",
        "project_list",
        DAILY,
        frozenset({"cdp_project_ids"}),
    ),
    # For account/get "if omitted you get one aggregated row" (notes §3.3).
    Level("account", "/open_api/v3.0/local/report/account/get/", "data_list", TOTAL, frozenset()),
)
PROMOTION_LEVEL = LEVELS[0]

ENUM_FILTERS: dict[str, tuple[str, ...]] = {
    "marketing_goal": ("LIVE", "VIDEO_IMAGE"),
    "local_delivery_scene": ("CLUE", "CONTENT_HEATING", "POI_CUSTOMER", "PURCHASE"),
    "campaign_type": ("GENERAL", "SEARCHING"),
    "delivery_mode": ("CDP_AUTO_MODE", "MANUAL_MODE"),
}
FREE_FILTERS = frozenset({"external_action"})  # accepted, not modelled


@dataclass(frozen=True)
class ReportQuery:
    account_id: int
    start: date
    end: date
    granularity: str
    metrics: tuple[str, ...]
    page: int = 1
    page_size: int = 10
    filtering: Mapping[str, Any] = field(default_factory=dict)
    order_field: str | None = None
    order_type: str = "DESC"


def _single(args: Mapping[str, list[str]], name: str) -> str | None:
    values = args.get(name) or []
    if len(values) > 1:
        raise _param_error(f"{name} given {len(values)} times; send it once")
    return values[0] if values else None


def _required(args: Mapping[str, list[str]], name: str) -> str:
    value = _single(args, name)
    if value is None or value == "":
        raise _param_error(f"{name} is required")
    return value


def _date_param(args: Mapping[str, list[str]], name: str) -> date:
    value = _required(args, name)
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise _param_error(f"{name} must be YYYY-MM-DD, got {value!r}")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _param_error(f"{name} is not a real date: {value!r}") from None


def _int_param(args: Mapping[str, list[str]], name: str, default: int) -> int:
    value = _single(args, name)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit():
        raise _param_error(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _parse_metrics(raw: str) -> tuple[str, ...]:
    # The real trap: metrics must be a JSON array; a Python repr "['stat_cost']" or a bare
    # "stat_cost" is refused ("❌ 直接传列表 … ✅ 使用 json.dumps()").
    try:
        value = json.loads(raw)
    except ValueError:
        raise _param_error(
            f'metrics must be a JSON-encoded array, e.g. ["stat_cost","show_cnt"]; got {raw[:60]!r}'
        ) from None
    if not isinstance(value, list) or not value or not all(isinstance(m, str) for m in value):
        raise _param_error("metrics must be a non-empty JSON array of metric names")
    unknown = [m for m in value if m not in METRICS]
    if unknown:
        raise _param_error(f"unknown metrics: {unknown}")
    return tuple(dict.fromkeys(value))


def _parse_id_list(name: str, value: Any, parent: str = "filtering") -> frozenset[int]:
    if not isinstance(value, list):
        raise _param_error(f"{parent}.{name} must be an array of ids")
    ids: set[int] = set()
    for item in value:
        if isinstance(item, bool) or not (
            isinstance(item, int) or (isinstance(item, str) and item.isascii() and item.isdigit())
        ):
            raise _param_error(f"{parent}.{name} must contain integer ids, got {item!r}")
        ids.add(int(item))
    return frozenset(ids)


def _parse_filtering(raw: str | None, level: Level) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise _param_error("filtering must be a JSON-encoded object") from None
    if not isinstance(value, dict):
        raise _param_error("filtering must be a JSON-encoded object")
    parsed: dict[str, Any] = {}
    for key, item in value.items():
        if key in level.id_filters:
            parsed[key] = _parse_id_list(key, item)
        elif key in ENUM_FILTERS:
            if item not in ENUM_FILTERS[key]:
                raise _param_error(f"filtering.{key} must be one of {list(ENUM_FILTERS[key])}")
            parsed[key] = item
        elif key not in FREE_FILTERS:
            raise ApiError(40003, f"unknown filtering field {key!r}")
    return parsed


def parse_report_query(args: Mapping[str, list[str]], level: Level, today: date) -> ReportQuery:
    """Every check the platform makes, each failing with 40001 naming the parameter."""
    account_raw = _required(args, "local_account_id")
    if not account_raw.isascii() or not account_raw.isdigit():
        raise _param_error(f"local_account_id must be digits, got {account_raw!r}")
    start, end = _date_param(args, "start_date"), _date_param(args, "end_date")
    granularity = _single(args, "time_granularity") or level.default_granularity
    if granularity not in GRANULARITIES:
        raise _param_error(f"time_granularity must be one of {list(GRANULARITIES)}")
    if start > end:
        raise _param_error("start_date must not be after end_date")
    limit = MAX_HOURLY_SPAN_DAYS if granularity == HOURLY else MAX_SPAN_DAYS
    if (end - start).days > limit:
        raise _param_error(f"end_date - start_date must be <= {limit} days for {granularity}")
    if start < today - timedelta(days=MAX_SPAN_DAYS):
        raise _param_error(f"start_date must be on or after {today - timedelta(days=365)}")
    metrics_raw = _single(args, "metrics")
    if metrics_raw is None:
        raise _param_error('metrics is required, a JSON-encoded array like ["stat_cost"]')
    metrics = _parse_metrics(metrics_raw)
    page = _int_param(args, "page", 1)
    if page < 1:
        raise _param_error("page must be >= 1")
    page_size = _int_param(args, "page_size", 10)
    if page_size not in PAGE_SIZES:
        raise _param_error(f"page_size must be one of {list(PAGE_SIZES)}, got {page_size}")
    order_field = _single(args, "order_field") or None
    if order_field is not None and order_field not in metrics:
        raise _param_error("order_field must be one of the requested metrics")
    order_type = _single(args, "order_type") or "DESC"
    if order_type not in ("ASC", "DESC"):
        raise _param_error("order_type must be ASC or DESC")
    return ReportQuery(
        account_id=int(account_raw),
        start=start,
        end=end,
        granularity=granularity,
        metrics=metrics,
        page=page,
        page_size=page_size,
        filtering=_parse_filtering(_single(args, "filtering"), level),
        order_field=order_field,
        order_type=order_type,
    )


def _keep(p: Promotion, filtering: Mapping[str, Any]) -> bool:
    checks = (
        ("promotion_ids", lambda ids: p.promotion_id in ids),
        ("cdp_project_ids", lambda ids: p.project_id in ids),
        ("marketing_goal", lambda v: p.marketing_goal == v),
        ("local_delivery_scene", lambda v: p.delivery_scene == v),
        ("campaign_type", lambda v: p.campaign_type == v),
        ("delivery_mode", lambda v: p.delivery_mode == v),
    )
    return all(test(filtering[key]) for key, test in checks if key in filtering)


@dataclass(frozen=True)
class Now:
    """The sandbox's notion of the present: report "today" and the Beijing hour."""

    today: date
    hour: int


def _days(start: date, end: date) -> Iterator[date]:
    for n in range((end - start).days + 1):
        yield start + timedelta(days=n)


def _facts(
    ledger: Ledger, account: Account, query: ReportQuery, now: Now
) -> Iterator[tuple[tuple[Any, ...], Promotion, Counts]]:
    """(time key, promotion, counts) for every promotion row in the range, as observed now:
    nothing after today, and today only for the hours already past (partial numbers)."""
    last = min(query.end, now.today)
    for p in account.promotions:
        if not _keep(p, query.filtering):
            continue
        for day in _days(query.start, last):
            full = ledger.full_day(account.account_id, p, day)
            if full is None:
                continue
            if day == now.today or query.granularity == HOURLY:
                hours = ledger.hours(account.account_id, p, day, full)
                if day == now.today:
                    if now.hour == 0:
                        continue  # nothing reported yet for today
                    hours = hours[: now.hour]
                if query.granularity == HOURLY:
                    for h, counts in enumerate(hours):
                        if counts.any():
                            yield (day, h), p, counts
                    continue
                full = sum(hours, Counts())
            yield ((day,) if query.granularity == DAILY else ()), p, full


def _identity(level: Level, account: Account, p: Promotion) -> tuple[int, dict[str, Any]]:
    if level.name == "promotion":
        return p.promotion_id, {
            "promotion_id": p.promotion_id,
            "promotion_name": p.promotion_name,
            "project_id": p.project_id,
            "project_name": p.project_name,
        }
    if level.name == "project":
        return p.project_id, {"project_id": p.project_id, "project_name": p.project_name}
    return account.account_id, {"local_account_id": account.account_id}


def _time_fields(key: tuple[Any, ...]) -> dict[str, str]:
    if not key:
        return {}
    fields = {"stat_time_day": key[0].isoformat()}
    if len(key) == 2:
        fields["stat_time_hour"] = f"{key[0].isoformat()} {key[1]:02d}:00:00"
    return fields


def run_report(
    ledger: Ledger, level: Level, account: Account, query: ReportQuery, now: Now
) -> list[dict[str, Any]]:
    """All rows of a query, in the platform's order, before pagination."""
    groups: dict[tuple[tuple[Any, ...], int], Counts] = {}
    names: dict[int, dict[str, Any]] = {}
    for key, p, counts in _facts(ledger, account, query, now):
        ident, fields = _identity(level, account, p)
        names[ident] = fields
        groups[(key, ident)] = groups.get((key, ident), Counts()) + counts
    # Time ascending, newest object first within a time: the order of the real sample.
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1]))
    rows = [
        {
            **names[ident],
            **_time_fields(key),
            **{m: METRICS[m](counts) for m in query.metrics},
        }
        for (key, ident), counts in ordered
    ]
    if query.order_field:
        rows.sort(key=lambda row: row[query.order_field], reverse=query.order_type == "DESC")
    return rows


def paginate(rows: list[dict[str, Any]], page: int, page_size: int, list_key: str) -> dict:
    total = len(rows)
    start = (page - 1) * page_size
    return {
        list_key: rows[start : start + page_size],
        "page_info": {
            "page": page,
            "page_size": page_size,
            "total_number": total,
            "total_page": math.ceil(total / page_size),
        },
    }


# --------------------------------------------------------------------------------------------
# Authorization state


DEFAULT_USER = "default"  # the user every control route means when it names none


@dataclass(frozen=True)
class User:
    """An Ocean Engine login (``2/user/info``: ``id``, ``display_name``, ``email``)."""

    key: str  # how control routes name it
    id: int
    display_name: str
    email: str


@dataclass
class AuthCode:
    issued_at: float
    account_ids: tuple[int, ...]
    user: str = DEFAULT_USER
    used: bool = False


@dataclass
class Grant:
    """A user's live authorization of the app: their re-authorizing replaces it wholesale."""

    account_ids: list[int]
    access_token: str
    refresh_token: str
    access_expires_at: float
    refresh_expires_at: float
    user: str = DEFAULT_USER


@dataclass
class Manager:
    """A granted account that is not itself a 本地推 account: an organisation, a 来客 account,
    an agent… ``children`` are the 本地推 accounts it reaches (the report accepts them when the
    manager is granted and valid); ``ad_children`` an organisation's 巨量广告 accounts."""

    account_id: int
    name: str
    account_type: str
    children: list[int]
    ad_children: list[int] = field(default_factory=list)


@dataclass
class State:
    options: Options
    anchor: date
    accounts: list[Account]
    ledger: Ledger
    offset: float = 0.0
    grants: dict[str, Grant] = field(default_factory=dict)  # user key -> their live grant
    users: dict[str, User] = field(default_factory=dict)
    login: str = DEFAULT_USER  # who the authorization page consents as (no cookie)
    codes: dict[str, AuthCode] = field(default_factory=dict)
    denied: set[int] = field(default_factory=set)  # the report refuses them (40002)
    invalid: set[int] = field(default_factory=set)  # is_valid false: relationship removed
    managers: dict[int, Manager] = field(default_factory=dict)
    advertisers: dict[int, str] = field(default_factory=dict)  # 巨量广告 广告主 (not 本地推)
    params_seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    issued: list[str] = field(default_factory=list)  # every token and code, for leak scans
    calls: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rows_served: int = 0

    def account(self, account_id: int) -> Account | None:
        return next((a for a in self.accounts if a.account_id == account_id), None)

    @property
    def grant(self) -> Grant | None:
        """The default user's grant (what single-login tests and routes mean)."""
        return self.grants.get(DEFAULT_USER)

    def user(self, key: str) -> User:
        """The user named ``key``, made on first mention with a stable id."""
        found = self.users.get(key)
        if found is None:
            seed = self.options.seed
            # The default user's id is what the sandbox always answered; others hash their key.
            digest = _hash(seed, "user") if key == DEFAULT_USER else _hash(seed, "user", key)
            name = "本地推运营（沙盒）" if key == DEFAULT_USER else f"{key}（沙盒）"
            found = User(
                key, 1_100_000_000_000_000 + digest % 10**14, name, f"{key[:2]}***@example.com"
            )
            self.users[key] = found
        return found

    def holding(self, token: str, kind: str) -> Grant | None:
        """The live grant whose ``kind`` token (access | refresh) is ``token``."""
        for grant in self.grants.values():
            if _same(token, getattr(grant, f"{kind}_token")):
                return grant
        return None

    def name_of(self, account_id: int) -> str:
        account = self.account(account_id)
        if account is not None:
            return account.name
        if account_id in self.managers:
            return self.managers[account_id].name
        return self.advertisers.get(account_id, "")

    def known_ids(self) -> set[int]:
        return {a.account_id for a in self.accounts} | set(self.managers) | set(self.advertisers)

    def reachable(self, grant: Grant) -> set[int]:
        """The 本地推 accounts the report accepts for this grant: ticked directly, or reached
        through a granted manager; neither invalid."""
        locals_ = {a.account_id for a in self.accounts}
        out = {i for i in grant.account_ids if i in locals_ and i not in self.invalid}
        for i in grant.account_ids:
            manager = self.managers.get(i)
            if manager is not None and i not in self.invalid:
                out.update(c for c in manager.children if c not in self.invalid)
        return out


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def _request_id() -> str:
    # Shaped like the real ones: "202401120917417EE45D1DFD69DBAA2457".
    return datetime.now(SHANGHAI).strftime("%Y%m%d%H%M%S") + secrets.token_hex(10).upper()


def _json(payload: Any, status: int = 200) -> Response:
    # ensure_ascii=False: Chinese names travel as UTF-8, as on the real API. Python's json
    # writes ints exactly, so 19-digit ids stay integers above 2**53.
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, mimetype="application/json")


def _envelope(code: int, message: str, data: dict[str, Any]) -> Response:
    return _json({"code": code, "message": message, "request_id": _request_id(), "data": data})


def _html(status: int, title: str, text: str) -> Response:
    body = f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1><p>{text}</p></body></html>"  # noqa: E501
    return Response(body, status=status, mimetype="text/html")


def _gateway_error(status: int) -> Response:
    # What a load balancer in front of the API answers: HTML, not the JSON envelope.
    phrase = HTTP_STATUS_CODES.get(status, "Error")
    body = f"<html><head><title>{status} {phrase}</title></head><body><center><h1>{status} {phrase}</h1></center><hr><center>nginx</center></body></html>"  # noqa: E501
    return Response(body, status=status, mimetype="text/html")


def _with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(extra.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True, force=True)
    return data if isinstance(data, dict) else {}


class ControlError(Exception):
    """A bad control-route request: HTTP 400 with a JSON error."""


# --------------------------------------------------------------------------------------------
# The platform


class OceanEngineSandbox:
    """The simulated Ocean Engine platform; plugs into ``adsync.sandbox.server.create_app``."""

    name = "oceanengine"

    def __init__(self, seed: int = 1) -> None:
        self.seed = seed
        self.faults = FaultInjector(rate_limit_code=40100)
        self._lock = threading.Lock()
        self._state = self._fresh(Options(seed=seed))

    # -- Platform protocol -------------------------------------------------------------------

    def reset(self, options: dict[str, Any]) -> None:
        state = self._fresh(Options.parse(options or {}, self.seed))
        with self._lock:
            self._state = state

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s = self._state
            return {
                "calls": dict(s.calls),
                "exchanges": s.outcomes["exchange_ok"],
                "exchange_failed": s.outcomes["exchange_failed"],
                "refresh_ok": s.outcomes["refresh_ok"],
                "refresh_failed": s.outcomes["refresh_failed"],
                "errors": dict(s.errors),
                "rows_served": s.rows_served,
                "faults_injected": self.faults.injected,
                "authorized": bool(s.grants),
                "authorized_users": sorted(s.grants),
            }

    def register(self, app: Flask) -> None:
        api: list[tuple[str, str, str, Callable[[], dict[str, Any]]]] = [
            ("/open_api/oauth2/access_token/", "POST", "exchange", self._access_token),
            ("/open_api/oauth2/refresh_token/", "POST", "refresh", self._refresh_token),
            ("/open_api/oauth2/advertiser/get/", "GET", "advertisers", self._advertisers),
            ("/open_api/2/user/info/", "GET", "user_info", self._user_info),
            (CUSTOMER_CENTER_LIST, "GET", "customer_center", self._customer_center),
            (LIFE_ADVERTISER_LIST, "GET", "life_advertisers", self._life_advertisers),
        ]
        for level in LEVELS:
            api.append((level.path, "GET", f"report_{level.name}", self._report_view(level)))
        for path, method, kind, handler in api:
            app.add_url_rule(path, f"oe_{kind}", self._api_view(kind, handler), methods=[method])
        # open.oceanengine.com/audit/... and the legacy ad.oceanengine.com/openapi/audit/...
        app.add_url_rule("/audit/oauth.html", "oe_oauth_page", self._oauth_page)
        app.add_url_rule("/openapi/audit/oauth.html", "oe_oauth_page_legacy", self._oauth_page)
        control: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
            ("reset", "POST", self._ctl_reset),
            ("auth_code", "POST", self._ctl_auth_code),
            ("expire", "POST", self._ctl_expire),
            ("revoke", "POST", self._ctl_revoke),
            ("login", "POST", self._ctl_login),
            ("clock", "POST", self._ctl_clock),
            ("accounts", "POST", self._ctl_accounts),
            ("adjust", "POST", self._ctl_adjust),
            ("truth", "GET", self._ctl_truth),
            ("grant", "GET", self._ctl_grant),
            ("issued", "GET", self._ctl_issued),
            ("requests", "GET", self._ctl_requests),
            ("stats", "GET", self.stats),
        ]
        for name, method, handler in control:
            app.add_url_rule(
                f"/_sandbox/oceanengine/{name}",
                f"oe_ctl_{name}",
                self._control_view(handler),
                methods=[method],
            )

    # -- plumbing ----------------------------------------------------------------------------

    def _fresh(self, options: Options) -> State:
        anchor = options.today or datetime.now(SHANGHAI).date()
        return State(
            options=options,
            anchor=anchor,
            accounts=build_world(options, anchor),
            ledger=Ledger(options.seed, dense=options.dense),
        )

    def _now(self) -> float:
        """The sandbox clock: real time plus the offset set by /_sandbox/oceanengine/clock."""
        return time.time() + self._state.offset

    def _present(self) -> Now:
        local = datetime.fromtimestamp(self._now(), SHANGHAI)
        return Now(today=self._state.options.today or local.date(), hour=local.hour)

    def _api_view(self, kind: str, handler: Callable[[], dict[str, Any]]) -> Callable[[], Response]:
        def view() -> Response:
            with self._lock:
                self._state.calls[request.path] += 1
                self._state.params_seen[request.path] = _param_names()
            fault = self.faults.before_request(request.path)
            if fault is not None:
                return self._fault_response(kind, fault)
            try:
                data = handler()
            except ApiError as err:
                self._count(kind, ok=False, code=err.code)
                return _envelope(err.code, err.message, {})
            self._count(kind, ok=True)
            self.faults.after_request(request.path)  # done; a slow platform answers late
            return _envelope(0, "OK", data)

        return view

    def _fault_response(self, kind: str, fault: Fault) -> Response:
        if fault.http:
            self._count(kind, ok=False, code=f"http_{fault.code}")
            return _gateway_error(fault.code)
        self._count(kind, ok=False, code=fault.code)
        message = MESSAGES.get(fault.code, f"injected error {fault.code}")
        return _envelope(fault.code, message, {})

    def _count(self, kind: str, ok: bool, code: int | str | None = None) -> None:
        with self._lock:
            s = self._state
            if kind in ("exchange", "refresh"):
                s.outcomes[f"{kind}_{'ok' if ok else 'failed'}"] += 1
            if code is not None:
                s.errors[str(code)] += 1

    def _control_view(self, handler: Callable[[], dict[str, Any]]) -> Callable[[], Response]:
        def view() -> Response:
            try:
                return _json(handler())
            except (ControlError, ValueError) as exc:
                return _json({"ok": False, "error": str(exc)}, status=400)

        return view

    # -- OAuth -------------------------------------------------------------------------------

    def _check_app(self, body: Mapping[str, Any]) -> None:
        app_id, secret = body.get("app_id"), body.get("secret")
        if app_id is None or app_id == "":
            raise _param_error("app_id is required")
        if secret is None or secret == "":
            raise _param_error("secret is required")
        # app_id may arrive as a JSON number or a string of digits; nothing else.
        if isinstance(app_id, bool) or not isinstance(app_id, int | str):
            raise _param_error("app_id must be an integer")
        opts = self._state.options
        if (
            str(app_id) != opts.app_id
            or not isinstance(secret, str)
            or not _same(secret, opts.secret)
        ):
            raise ApiError(40101)

    def _issue_pair(self, account_ids: list[int], user: str) -> Grant:
        now, opts = self._now(), self._state.options
        grant = Grant(
            account_ids=account_ids,
            access_token=secrets.token_hex(20),
            refresh_token=secrets.token_hex(20),
            access_expires_at=now + opts.access_lifetime,
            refresh_expires_at=now + opts.refresh_lifetime,
            user=user,
        )
        self._state.issued += [grant.access_token, grant.refresh_token]
        return grant

    def _access_token(self) -> dict[str, Any]:
        body = _json_body()
        with self._lock:
            self._check_app(body)
            grant_type = body.get("grant_type")
            if grant_type is not None and grant_type != "auth_code":
                raise ApiError(40108, "grant_type must be auth_code")
            code = body.get("auth_code")
            if not isinstance(code, str) or not code:
                raise _param_error("auth_code is required")
            record = self._state.codes.get(code)
            if record is None or record.used or self._now() - record.issued_at > AUTH_CODE_LIFETIME:
                raise ApiError(40110)
            record.used = True
            # The consent already replaced this user's earlier grant (see _new_code_locked).
            grant = self._issue_pair(list(record.account_ids), record.user)
            self._state.grants[record.user] = grant
            first = grant.account_ids[0] if grant.account_ids else None
            return {
                "access_token": grant.access_token,
                "expires_in": self._state.options.access_lifetime,
                "refresh_token": grant.refresh_token,
                "refresh_token_expires_in": self._state.options.refresh_lifetime,
                "advertiser_ids": list(grant.account_ids),
                "advertiser_id": grant.account_ids[0] if grant.account_ids else 0,
                "advertiser_name": self._state.name_of(first) if first else "",
            }

    def _refresh_token(self) -> dict[str, Any]:
        body = _json_body()
        with self._lock:
            self._check_app(body)
            grant_type = body.get("grant_type")
            if grant_type is not None and grant_type != "refresh_token":
                raise ApiError(40108, "grant_type must be refresh_token")
            token = body.get("refresh_token")
            if not isinstance(token, str) or not token:
                raise _param_error("refresh_token is required")
            # Rotation is strict: only the newest refresh token works, and only once.
            grant = self._state.holding(token, "refresh")
            if grant is None:
                raise ApiError(40107)
            if self._now() >= grant.refresh_expires_at:
                raise ApiError(40103)
            new = self._issue_pair(grant.account_ids, grant.user)
            self._state.grants[grant.user] = new
            return {
                "access_token": new.access_token,
                "expires_in": self._state.options.access_lifetime,
                "refresh_token": new.refresh_token,
                "refresh_token_expires_in": self._state.options.refresh_lifetime,
            }

    def _authorize_locked(self, token: str | None) -> Grant:
        if not token:
            raise ApiError(40104)
        grant = self._state.holding(token, "access")
        if grant is None:
            raise ApiError(40105)  # unknown, rotated away, revoked or replaced by re-auth
        if self._now() >= grant.access_expires_at:
            raise ApiError(40102)
        return grant

    def _advertisers(self) -> dict[str, Any]:
        # The official SDK passes access_token as a query parameter here (bububa adds app_id
        # and secret, which are checked when present).
        token = request.args.get("access_token") or request.headers.get("Access-Token")
        with self._lock:
            grant = self._authorize_locked(token)
            if "app_id" in request.args or "secret" in request.args:
                self._check_app(request.args)
            s = self._state
            rows = []
            for account_id in grant.account_ids:
                manager = s.managers.get(account_id)
                rows.append(
                    {
                        "account_id": account_id,
                        "account_name": s.name_of(account_id),
                        # A 本地推 account ticked directly and a 巨量广告 广告主 are both
                        # ADVERTISER here; only the local report tells them apart.
                        "account_type": manager.account_type if manager else "ADVERTISER",
                        # "false则表示账号与账户已无管理关系" (SDK model list_inner.go)
                        "is_valid": account_id not in s.invalid,
                        "company_list": [],
                    }
                )
            return {"list": rows}

    def _user_info(self) -> dict[str, Any]:
        with self._lock:
            grant = self._authorize_locked(request.headers.get("Access-Token"))
            opts = self._state.options
            user = self._state.user(grant.user)
            # Fields of the official SDK's model_user_info_v2_response_data.go (UserInfoV2Api:
            # GET /open_api/2/user/info/, Access-Token header, no parameters): the user the
            # token belongs to ("Access Token记录了授权User信息", reference §1.1).
            return {
                "id": user.id,
                "display_name": user.display_name,
                "email": user.email,
                "app_id": int(opts.app_id),
                "token_scope_list": [1, 2, 3, 4],
                "token_api_list": [],
                "material_auth_status": False,
            }

    # -- listings of the accounts behind a manager -------------------------------------------

    def _granted_manager_locked(
        self, grant: Grant, raw: str, name: str, kinds: frozenset[str]
    ) -> Manager:
        """The manager named by ``raw`` if the grant holds it, it is valid and of ``kinds``."""
        manager = self._state.managers.get(int(raw))
        if int(raw) not in grant.account_ids or int(raw) in self._state.invalid:
            raise ApiError(40002, f"{name} {raw} is not authorized")
        if manager is None or manager.account_type not in kinds:
            raise _param_error(f"{name} {raw} is not a {' or '.join(sorted(kinds))} account")
        return manager

    def _customer_center(self) -> dict[str, Any]:
        """``GET v3.0/customer_center/account/list``: the accounts of a 巨量工作台 organisation."""
        args = {k: request.args.getlist(k) for k in request.args}
        with self._lock:
            grant = self._authorize_locked(request.headers.get("Access-Token"))
            raw = _required(args, "account_id")
            if not raw.isascii() or not raw.isdigit():
                raise _param_error(f"account_id must be digits, got {raw!r}")
            wanted = _parse_cc_filter(_single(args, "filter"))
            page, page_size = _listing_page(args)
            if page * page_size > CC_LISTING_LIMIT:
                raise _param_error(f"page*page_size must be <= {CC_LISTING_LIMIT}")
            manager = self._granted_manager_locked(grant, raw, "account_id", ORGANISATION_TYPES)
            s = self._state
            kind = wanted["account_type"]
            ids = {"LOCAL": manager.children, "AD": manager.ad_children}.get(kind, [])
            rows = [
                {"account_id": i, "account_name": s.name_of(i), "account_type": kind}
                for i in ids
                if ("account_ids" not in wanted or i in wanted["account_ids"])
                and wanted.get("account_name", "") in s.name_of(i)
            ]
            return paginate(rows, page, page_size, "accounts")

    def _life_advertisers(self) -> dict[str, Any]:
        """``GET v3.0/local/life/advertiser/list``: the 本地推 accounts of a 抖音来客 account."""
        args = {k: request.args.getlist(k) for k in request.args}
        with self._lock:
            grant = self._authorize_locked(request.headers.get("Access-Token"))
            raw = _required(args, "life_account_id")
            if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
                raise _param_error(f"life_account_id must be a positive integer, got {raw!r}")
            role = _parse_life_filtering(_single(args, "filtering"))
            page, page_size = _listing_page(args)
            manager = self._granted_manager_locked(
                grant, raw, "life_account_id", frozenset({LIFE_TYPE})
            )
            rows = []
            for n, child in enumerate(manager.children):
                # Every fourth a virtual account (虚拟账户), the first the main one.
                kind = "VIRTUAL_ACCOUNT" if n % 4 == 3 else "DIRECT_ACCOUNT"
                if role in ("ALL", kind):
                    rows.append(
                        {
                            "local_account_id": child,
                            "local_account_role": kind,
                            "account_main_copy_tag": "MAIN_ACCOUNT" if n == 0 else "COPY_ACCOUNT",
                        }
                    )
            return paginate(rows, page, page_size, "adv_list")

    # -- reports -----------------------------------------------------------------------------

    def _report_view(self, level: Level) -> Callable[[], dict[str, Any]]:
        def handler() -> dict[str, Any]:
            args = {k: request.args.getlist(k) for k in request.args}
            with self._lock:
                grant = self._authorize_locked(request.headers.get("Access-Token"))
                now = self._present()
                query = parse_report_query(args, level, now.today)
                account = self._state.account(query.account_id)
                if query.account_id in self._state.advertisers:
                    raise ApiError(40001, message=NOT_LOCAL_MESSAGE)
                if (
                    account is None
                    or query.account_id not in self._state.reachable(grant)
                    or query.account_id in self._state.denied
                ):
                    raise ApiError(40002, f"local_account_id {query.account_id} not authorized")
                rows = run_report(self._state.ledger, level, account, query, now)
                page = paginate(rows, query.page, query.page_size, level.list_key)
                self._state.rows_served += len(page[level.list_key])
                return page

        return handler

    # -- authorization page ------------------------------------------------------------------

    def _oauth_page(self) -> Response:
        app_id = request.args.get("app_id", "")
        redirect_uri = request.args.get("redirect_uri", "")
        with self._lock:
            if not app_id:
                return _html(400, "授权失败 Authorization failed", "app_id is missing")
            if app_id != self._state.options.app_id:
                return _html(400, "授权失败 Authorization failed", "unknown app_id")
            if not redirect_uri:
                return _html(400, "授权失败 Authorization failed", "redirect_uri is missing")
            if urlsplit(redirect_uri).scheme not in ("http", "https"):
                return _html(400, "授权失败 Authorization failed", "redirect_uri must be http(s)")
            # The simulated user ticks every account and consents, as whoever is logged in.
            user = request.cookies.get("oe_sandbox_user") or self._state.login
            code = self._new_code_locked([a.account_id for a in self._state.accounts], user)
        extra = {"auth_code": code}
        if "state" in request.args:
            extra["state"] = request.args["state"]
        return Response(status=302, headers={"Location": _with_query(redirect_uri, extra)})

    def _new_code_locked(self, account_ids: list[int], user: str = DEFAULT_USER) -> str:
        """A user consents on the authorization page. "重新授权会覆盖前一次授权，需要确保此次授权
        已经勾选了想要的全部账户！！重新授权需要重新获取access token" (bububa
        api/oauth/advertiser_get.go, in the reference §1.1): re-authorizing overwrites the
        previous grant, so its tokens die here, at the consent — whether or not the new code is
        ever exchanged — and only the exchange brings tokens back. Only this user's grant: a
        grant is per user, and another user's stays alive."""
        code = secrets.token_hex(20)
        self._state.user(user)
        self._state.codes[code] = AuthCode(self._now(), tuple(account_ids), user)
        self._state.grants.pop(user, None)
        self._state.issued.append(code)
        return code

    # -- control routes ----------------------------------------------------------------------

    def _ctl_reset(self) -> dict[str, Any]:
        self.reset(_body())
        self.faults.reset()
        return {"ok": True}

    def _ctl_auth_code(self) -> dict[str, Any]:
        """Mint an auth code for what a user would tick. ``account_ids``: 本地推 accounts ticked
        directly (default: all of them, unless ``grants`` is given). ``grants``: other kinds,
        each ``{"type": T, ...}``: T an organisation (CUSTOMER_ADMIN / CUSTOMER_OPERATOR) or
        any other SDK type with ``account_ids`` it manages; ``{"type": "ADVERTISER",
        "local": false}`` a 巨量广告 广告主; ``"is_valid": false`` on any of them; ``"name"``.
        ``user``: who consents (a key; default the default user), replacing only their grant."""
        body = _body()
        unknown = set(body) - {"account_ids", "grants", "user"}
        if unknown:
            raise ControlError(f"unknown auth_code fields: {sorted(unknown)}")
        user = _control_user(body.get("user"))
        with self._lock:
            s = self._state
            known = [a.account_id for a in s.accounts]
            wanted = body.get("account_ids")
            if wanted is None:
                ids = [] if "grants" in body else known
            else:
                # An empty list is allowed: a user can consent without ticking any account.
                ids = [_control_id(x) for x in _control_list(wanted, "account_ids")]
                missing = sorted(set(ids) - set(known))
                if missing:
                    raise ControlError(f"unknown account ids: {missing}")
            specs = [
                _grant_spec(g, set(known)) for g in _control_list(body.get("grants", []), "grants")
            ]
            granted = [self._make_granted_locked(spec) for spec in specs]
            ids += granted
            return {
                "auth_code": self._new_code_locked(ids, user),
                "granted": [self._granted_view_locked(i) for i in ids],
                "user": self._user_view_locked(user),
            }

    def _make_granted_locked(self, spec: dict[str, Any]) -> int:
        """A new manager or 巨量广告 广告主 with a fresh id; a 本地推 account id as it is."""
        s = self._state
        kind = spec["type"]
        if spec.get("account_id") is not None:  # a 本地推 account, ticked with options
            account_id = int(spec["account_id"])
        else:
            n = len(s.managers) + len(s.advertisers)
            r = _rng(s.options.seed, "granted", n)
            account_id = 1_600_000_000_000_000 + r.randrange(90_000_000_000_000)
            while account_id in s.known_ids():
                account_id += 1
            if kind == "ADVERTISER":  # a company's 巨量广告 广告主 id: not a 本地推 account
                s.advertisers[account_id] = (
                    spec.get("name") or f"{COMPANIES[n % len(COMPANIES)]}总户"
                )
            else:
                name = spec.get("name") or _manager_name(kind, n)
                ad_children: list[int] = []
                if kind in ORGANISATION_TYPES:  # an organisation also holds 巨量广告 accounts
                    ad_id = account_id + 1
                    while ad_id in s.known_ids() or ad_id == account_id:
                        ad_id += 1
                    s.advertisers[ad_id] = f"{name}-巨量广告"
                    ad_children.append(ad_id)
                s.managers[account_id] = Manager(
                    account_id, name, kind, list(spec.get("account_ids", [])), ad_children
                )
        if spec.get("is_valid") is False:
            s.invalid.add(account_id)
        return account_id

    def _granted_view_locked(self, account_id: int) -> dict[str, Any]:
        s = self._state
        manager = s.managers.get(account_id)
        view: dict[str, Any] = {
            "account_id": account_id,
            "account_name": s.name_of(account_id),
            "account_type": manager.account_type if manager else "ADVERTISER",
            "is_valid": account_id not in s.invalid,
            "local": s.account(account_id) is not None,
        }
        if manager is not None:
            view["manages"] = list(manager.children)
            view["ad_accounts"] = list(manager.ad_children)
        return view

    def _ctl_expire(self) -> dict[str, Any]:
        body = _body()
        user = _control_user(body.get("user"))
        with self._lock:
            grant = self._require_grant_locked(user)
            past = self._now() - 1
            if body.get("access", True):
                grant.access_expires_at = past
            if body.get("refresh", False):
                grant.refresh_expires_at = past
            return self._grant_view_locked(user)

    def _ctl_revoke(self) -> dict[str, Any]:
        """A user removes the app's authorization (``user``), or every user does (none named):
        every token of those grants is now unknown; other users' grants live on."""
        body = _body()
        with self._lock:
            if "user" in body:
                self._state.grants.pop(_control_user(body["user"]), None)
            else:
                self._state.grants.clear()
            return {"ok": True, "authorized_users": sorted(self._state.grants)}

    def _ctl_login(self) -> dict[str, Any]:
        """Who the authorization page consents as, for browsers without the cookie."""
        user = _control_user(_body().get("user"))
        with self._lock:
            self._state.login = user
            return {"ok": True, "user": self._user_view_locked(user)}

    def _user_view_locked(self, key: str) -> dict[str, Any]:
        user = self._state.user(key)
        return {"key": user.key, "id": user.id, "display_name": user.display_name}

    def _ctl_clock(self) -> dict[str, Any]:
        body = _body()
        with self._lock:
            if "offset_seconds" in body:
                self._state.offset = _control_number(body["offset_seconds"], "offset_seconds")
            if "advance_seconds" in body:
                self._state.offset += _control_number(body["advance_seconds"], "advance_seconds")
            now = self._present()
            return {
                "offset_seconds": self._state.offset,
                "now": datetime.fromtimestamp(self._now(), SHANGHAI).isoformat(),
                "today": now.today.isoformat(),
            }

    def _ctl_accounts(self) -> dict[str, Any]:
        body = _body()
        with self._lock:
            s = self._state
            known = {a.account_id for a in s.accounts}
            for key in ("deny", "allow"):
                ids = {_control_id(x) for x in _control_list(body.get(key, []), key)}
                if ids - known:
                    raise ControlError(f"unknown account ids in {key}: {sorted(ids - known)}")
                s.denied = s.denied | ids if key == "deny" else s.denied - ids
            granted = s.known_ids() - known
            for key in ("invalidate", "validate"):
                ids = {_control_id(x) for x in _control_list(body.get(key, []), key)}
                if ids - known - granted:
                    raise ControlError(
                        f"unknown account ids in {key}: {sorted(ids - known - granted)}"
                    )
                s.invalid = s.invalid | ids if key == "invalidate" else s.invalid - ids
            user = _control_user(body.get("user"))
            add = body.get("add", 0)
            if isinstance(add, bool) or not isinstance(add, int) or add < 0:
                raise ControlError("add must be a non-negative integer")
            under = body.get("under")
            manager = None
            if under is not None:
                manager = s.managers.get(_control_id(under))
                if manager is None:
                    raise ControlError(f"under: {under} is not a manager account")
            for _ in range(add):
                account = build_account(
                    s.options.seed,
                    len(s.accounts),
                    s.anchor,
                    s.options.promotions_per_account,
                    False,
                    s.options.dense,
                )
                s.accounts = _check_unique_ids([*s.accounts, account])
                if manager is not None:  # the organisation gains an account; no new grant
                    manager.children.append(account.account_id)
                elif user in s.grants:
                    s.grants[user].account_ids.append(account.account_id)
            renames = body.get("rename", {})
            if not isinstance(renames, dict):
                raise ControlError("rename must be {account id: new name}")
            for raw, name in renames.items():
                account = s.account(_control_id(raw))
                if account is None or not isinstance(name, str) or not name.strip():
                    raise ControlError(f"rename: {raw} is not a 本地推 account, or no new name")
                # The account's name changes at the platform (every listing says the new one).
                s.accounts = [
                    replace(a, name=name) if a.account_id == account.account_id else a
                    for a in s.accounts
                ]
            if "detach" in body:
                source = s.managers.get(_control_id(body.get("from")))
                if source is None:
                    raise ControlError("detach needs from: a manager account id")
                gone = {_control_id(x) for x in _control_list(body["detach"], "detach")}
                source.children = [c for c in source.children if c not in gone]
            if "attach" in body:
                target = s.managers.get(_control_id(body.get("to")))
                if target is None:
                    raise ControlError("attach needs to: a manager account id")
                for x in _control_list(body["attach"], "attach"):
                    if _control_id(x) not in known:
                        raise ControlError(f"unknown account id {x}")
                    if _control_id(x) not in target.children:
                        target.children.append(_control_id(x))
            return self._grant_view_locked(user)

    def _ctl_adjust(self) -> dict[str, Any]:
        body = _body()
        account_id = _control_id(body.get("account_id"))
        try:
            day = _parse_date_option(body.get("date"))
        except ValueError:
            raise ControlError("date must be YYYY-MM-DD") from None
        factor = _control_number(body.get("factor"), "factor")
        if factor < 0:
            raise ControlError("factor must be >= 0")
        with self._lock:
            if self._state.account(account_id) is None:
                raise ControlError(f"unknown account id {account_id}")
            adjustments = self._state.ledger.adjustments
            adjustments[(account_id, day)] = adjustments.get((account_id, day), 1.0) * factor
            return {"ok": True, "factor": adjustments[(account_id, day)]}

    def _ctl_truth(self) -> dict[str, Any]:
        args = request.args
        with self._lock:
            now = self._present()
            try:
                start = _date_param({k: args.getlist(k) for k in args}, "start_date")
                end = _date_param({k: args.getlist(k) for k in args}, "end_date")
            except ApiError as err:
                raise ControlError(err.message) from None
            if start > end:
                raise ControlError("start_date must not be after end_date")
            raw = args.get("local_account_id")
            if raw:
                account = self._state.account(_control_id(raw))
                if account is None:
                    raise ControlError(f"unknown account id {raw}")
                return {
                    "local_account_id": account.account_id,
                    "rows": self._truth_rows_locked(account, start, end, now),
                }
            return {
                "accounts": [
                    {
                        "local_account_id": a.account_id,
                        "account_name": a.name,
                        "rows": self._truth_rows_locked(a, start, end, now),
                    }
                    for a in self._state.accounts
                ]
            }

    def _truth_rows_locked(
        self, account: Account, start: date, end: date, now: Now
    ) -> list[dict[str, Any]]:
        query = ReportQuery(account.account_id, start, end, DAILY, TRUTH_METRICS)
        return run_report(self._state.ledger, PROMOTION_LEVEL, account, query, now)

    def _ctl_issued(self) -> dict[str, Any]:
        """For leak scans: salted SHA-256 of every prefix (8 characters and longer) of every
        token and auth code issued since the reset — never the values. A scanner hashes each
        run of hex characters it finds the same way; 8 characters is twice a masked prefix."""
        salt = secrets.token_hex(8)
        with self._lock:
            issued = list(self._state.issued)
        hashes = sorted(
            {
                hashlib.sha256(f"{salt}{value[:k]}".encode()).hexdigest()
                for value in issued
                for k in range(LEAK_PREFIX, len(value) + 1)
            }
        )
        return {"salt": salt, "min_prefix": LEAK_PREFIX, "issued": len(issued), "hashes": hashes}

    def _ctl_requests(self) -> dict[str, Any]:
        """The parameter names (never values) of the last request to each path, so a test can
        hold a client to the official SDK's request models."""
        with self._lock:
            return {"requests": {k: dict(v) for k, v in self._state.params_seen.items()}}

    def _ctl_grant(self) -> dict[str, Any]:
        user = _control_user(request.args.get("user"))
        with self._lock:
            return self._grant_view_locked(user)

    def _require_grant_locked(self, user: str = DEFAULT_USER) -> Grant:
        grant = self._state.grants.get(user)
        if grant is None:
            raise ControlError(
                f"no grant of user {user}: authorize first (auth_code + oauth2/access_token)"
            )
        return grant

    def _grant_view_locked(self, user: str = DEFAULT_USER) -> dict[str, Any]:
        """A user's grant without its secrets: a 4-character token prefix at most."""
        s = self._state
        grant = s.grants.get(user)
        ids = list(grant.account_ids) if grant else []
        names = {a.account_id: a.name for a in s.accounts}
        return {
            "app_id": s.options.app_id,
            "authorized": grant is not None,
            "account_ids": ids,
            "accounts": [{"id": i, "name": names.get(i) or s.name_of(i)} for i in ids],
            "all_account_ids": [a.account_id for a in s.accounts],
            "denied_account_ids": sorted(s.denied),
            "invalid_account_ids": sorted(s.invalid),
            # The 本地推 accounts the report accepts: ticked, or reached through a manager.
            "reachable_account_ids": sorted(s.reachable(grant)) if grant else [],
            "access_token_prefix": grant.access_token[:4] if grant else None,
            "access_expires_at": grant.access_expires_at if grant else None,
            "refresh_expires_at": grant.refresh_expires_at if grant else None,
            "today": self._present().today.isoformat(),
            "user": self._user_view_locked(user),
            "authorized_users": sorted(s.grants),
        }


def _param_names() -> dict[str, Any]:
    body = request.get_json(silent=True, force=True) if request.method == "POST" else None
    return {
        "query": sorted(request.args),
        "body": sorted(body) if isinstance(body, dict) else [],
        "access_token_header": "Access-Token" in request.headers,
    }


def _manager_name(kind: str, n: int) -> str:
    if kind in ORGANISATION_TYPES:
        return f"巨量工作台-天后医美集团{n + 1}"
    if kind == LIFE_TYPE:
        return f"抖音来客-天后医美{n + 1}"
    return f"{kind}-代理{n + 1}"


def _grant_spec(raw: Any, local_ids: set[int]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ControlError("each grant must be an object with a type")
    unknown = set(raw) - {"type", "account_ids", "account_id", "local", "is_valid", "name"}
    if unknown:
        raise ControlError(f"unknown grant fields: {sorted(unknown)}")
    kind = raw.get("type")
    if kind not in ACCOUNT_TYPES:
        raise ControlError(f"type must be an oauth2/advertiser/get account_type, got {kind!r}")
    spec: dict[str, Any] = {"type": kind}
    if "is_valid" in raw:
        if not isinstance(raw["is_valid"], bool):
            raise ControlError("is_valid must be true or false")
        spec["is_valid"] = raw["is_valid"]
    if "name" in raw:
        if not isinstance(raw["name"], str) or not raw["name"]:
            raise ControlError("name must be a non-empty string")
        spec["name"] = raw["name"]
    if kind == "ADVERTISER":
        if "account_ids" in raw:
            raise ControlError("an ADVERTISER grant is one account: account_id, or local: false")
        if raw.get("local") is False:
            if "account_id" in raw:
                raise ControlError("local: false makes a new 广告主 id; leave account_id out")
            return spec
        account_id = _control_id(raw.get("account_id"))
        if account_id not in local_ids:
            raise ControlError(f"unknown account id {account_id}")
        spec["account_id"] = account_id
        return spec
    if "account_id" in raw or "local" in raw:
        raise ControlError(f"a {kind} grant takes account_ids (the accounts it manages)")
    children = [_control_id(x) for x in _control_list(raw.get("account_ids", []), "account_ids")]
    missing = sorted(set(children) - local_ids)
    if missing:
        raise ControlError(f"unknown account ids: {missing}")
    spec["account_ids"] = children
    return spec


def _listing_page(args: Mapping[str, list[str]]) -> tuple[int, int]:
    """``page`` (default 1) and ``page_size`` (default 10, 1..100) of the account listings."""
    page = _int_param(args, "page", 1)
    if page < 1:
        raise _param_error("page must be >= 1")
    page_size = _int_param(args, "page_size", 10)
    if not 1 <= page_size <= LISTING_MAX_PAGE_SIZE:
        raise _param_error(
            f"page_size must be between 1 and {LISTING_MAX_PAGE_SIZE}, got {page_size}"
        )
    return page, page_size


def _json_object(raw: str, name: str, example: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise _param_error(f"{name} must be a JSON-encoded object like {example}; got {raw[:60]!r}")
    return value


def _parse_cc_filter(raw: str | None) -> dict[str, Any]:
    example = '{"account_type":"LOCAL"}'
    if raw is None or raw == "":
        raise _param_error(f"filter is required, a JSON-encoded object like {example}")
    value = _json_object(raw, "filter", example)
    unknown = set(value) - CC_FILTER_KEYS
    if unknown:
        raise _param_error(f"unknown filter fields: {sorted(unknown)}")
    if value.get("account_type") not in CC_ACCOUNT_TYPES:
        raise _param_error(f"filter.account_type is required, one of {list(CC_ACCOUNT_TYPES)}")
    out: dict[str, Any] = {"account_type": value["account_type"]}
    if "account_ids" in value:
        out["account_ids"] = _parse_id_list("account_ids", value["account_ids"], "filter")
    for key in ("account_name", "account_tag"):
        if key in value:
            if not isinstance(value[key], str):
                raise _param_error(f"filter.{key} must be a string")
            if key == "account_name":
                out[key] = value[key]
    return out


def _parse_life_filtering(raw: str | None) -> str:
    if raw is None or raw == "":
        return "ALL"
    value = _json_object(raw, "filtering", '{"local_account_role":"ALL"}')
    unknown = set(value) - {"local_account_role"}
    if unknown:
        raise _param_error(f"unknown filtering fields: {sorted(unknown)}")
    role = value.get("local_account_role", "ALL")
    if role not in LIFE_ROLES:
        raise _param_error(f"filtering.local_account_role must be one of {list(LIFE_ROLES)}")
    return role


def _json_body() -> dict[str, Any]:
    """POST bodies are JSON (Content-Type: application/json); a form post is a client bug."""
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise _param_error("request body must be a JSON object")
    return data


def _control_list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ControlError(f"{name} must be a list")
    return value


def _control_user(value: Any) -> str:
    if value is None:
        return DEFAULT_USER
    if not isinstance(value, str) or not value.isascii() or not value.replace("_", "").isalnum():
        raise ControlError(f"user must be a short ascii name, got {value!r}")
    return value[:40]


def _control_id(value: Any) -> int:
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and value.isascii() and value.isdigit())
    ):
        raise ControlError(f"not an account id: {value!r}")
    return int(value)


def _control_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ControlError(f"{name} must be a number")
    return float(value)
