"""One sync run: dates × accounts → the Bitable, the local copy and the ledger.

A run takes a lease per date (two overlapping runs never write the same date at once: the
second waits, or answers "already running"), fetches every account concurrently under the
client-side rate limit, isolates each account's failure, saves the local copy, upserts the
Bitable under the table's writer lease, and records the outcome. The Bitable is written while
the fetch goes on: each account's rows go to a writer thread as soon as they arrive, so the
table's serial, spaced writes overlap the rate-limited fetch instead of following it.

Each account is fetched with one authorization chain (``discovery.routes``: the first usable
chain that reaches it). A chain that is dead, or dies mid-run, fails only the accounts no other
chain reaches — those are retried with the next chain — and the run goes on for the rest: it
is ``partial``, naming the dead chain's user and accounts (``RunResult.dead_chains``). Nothing
here knows about chat: the CLI, a chat command and a scheduled job all call ``Runner.run`` and
render ``RunResult``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from adsync.sync import discovery, localcopy
from adsync.sync.causes import cause_of, causes_line, collapse, group
from adsync.sync.dates import check_reportable
from adsync.sync.errors import AdsyncError, AuthorizationNeeded
from adsync.sync.leases import Busy, holding
from adsync.sync.oceanengine import PermanentError, TransientError
from adsync.sync.recovery import INTERRUPTED, RUN_LEASE_TTL, recover_after_crash, run_lease
from adsync.sync.reports import (
    Account,
    ReportRow,
    dates_between,
    fetch_rows,
    report_today,
    resolve_accounts,
)
from adsync.sync.services import Services
from adsync.sync.store import (
    BACKGROUND_WAIT_SECONDS,
    accounts,
    actor,
    run_accounts,
    runs,
    utcnow,
)
from adsync.sync.tables import (
    Forecast,
    Registry,
    TableEvent,
    day_lease,
    forecast,
    write_lease,
)

if TYPE_CHECKING:
    from adsync.sync.bitable import UpsertResult
    from adsync.sync.routing import RoutedResult, RoutedUpsert, TableSet

log = logging.getLogger("adsync.runner")

OK, NO_DATA, FAILED = "ok", "no_data", "failed"
NO_PERMISSION = 40002  # "没有权限进行相关操作": this chain may not read the account; another may


@dataclass
class ChainFailure:
    """An authorization that could not give a token during the run: whose it is, why, and the
    accounts left unsynced because no other chain reaches them."""

    chain_id: str
    who: str
    reason: str
    accounts: list[str] = field(default_factory=list)  # account labels


@dataclass
class AccountResult:
    account_id: str
    name: str
    status: str  # ok | no_data | failed
    reason: str = ""
    rows: int = 0
    api_calls: int = 0
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.name} ({self.account_id})" if self.name else self.account_id


@dataclass
class RunResult:
    """What a run did. ``status``: ok | partial (some accounts failed) | failed | busy."""

    start: date
    end: date
    trigger: str
    status: str = "running"
    run_id: int | None = None
    accounts: list[AccountResult] = field(default_factory=list)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    # Rows (among created/updated) whose Bitable write got no answer in time but were found
    # written when read back: "written (confirmed after a timeout)".
    confirmed_after_timeout: int = 0
    api_calls: int = 0
    feishu_calls: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # Accounts found, gone or skipped since the previous run (adsync.sync.discovery), said once.
    account_changes: list[str] = field(default_factory=list)
    error: str = ""
    hint: str = ""
    auth_url: str = ""  # set by the CLI, which may show a link; never by the run itself
    needs_authorization: bool = False
    dead_chains: list[ChainFailure] = field(default_factory=list)
    # Rolling tables: tables started, found or recreated by this run, and when the table new
    # days go into is expected to fill (facts; the bot side tells the group).
    table_events: list[TableEvent] = field(default_factory=list)
    table_forecast: Forecast | None = None
    # Per-account views made or renamed after the writes (adsync.sync.views), one line each;
    # views that could not be made are warnings.
    view_changes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[AccountResult]:
        return [a for a in self.accounts if a.status == FAILED]

    @property
    def rows(self) -> int:
        return sum(a.rows for a in self.accounts)

    @property
    def exit_code(self) -> int:
        if self.status == "ok":
            return 0
        return 3 if self.needs_authorization or self.auth_url else 1

    @property
    def dates(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}..{self.end}"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["start"], doc["end"] = self.start.isoformat(), self.end.isoformat()
        doc["rows"] = self.rows
        doc["exit_code"] = self.exit_code
        return doc


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rows: int
    last: AccountResult | None = None
    stage: str = "fetch"  # fetch | write | done


class Runner:
    def __init__(
        self,
        services: Services,
        progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.services = services
        self.settings = services.settings
        self.store = services.store
        self._progress = progress or (lambda _p: None)
        self._routes: dict[str, discovery.Route] = {}
        self._refused: dict[str, AuthorizationNeeded] = {}  # chain -> why it gave no token
        self._refused_accounts: dict[str, set[str]] = {}  # chain -> accounts it could not fetch
        self._refused_lock = threading.Lock()
        self._seen: set[type[BaseException]] = set()
        self._seen_lock = threading.Lock()
        self._in_scope: dict[str, str] = {}  # every account in scope (views), not only the run's

    def _tables(self) -> TableSet:
        from adsync.sync.routing import TableSet  # imports lark-oapi: only when writing

        return TableSet(self.settings, self.store)

    def run(
        self,
        start: date,
        end: date,
        *,
        account_ids: Sequence[str] | None = None,
        trigger: str = "cli",
        requested_by: str = "",
        wait: float = 1800.0,
    ) -> RunResult:
        """Sync ``start..end``. ``wait``: seconds to wait for an overlapping run (0 = answer
        "already running" at once). Never raises for a failed account or write: the result
        says what failed."""
        # Dates the platform refuses fail every account alike: refused here, before the ledger
        # (DateError, exit code 2), with the limit, not as N failed accounts and "run it again".
        check_reportable(start, report_today())
        started = time.monotonic()
        result = RunResult(start, end, trigger)
        account_filter = ",".join(account_ids)[:32] if account_ids else None
        # Before taking any lease: what a crashed run left (its leases, its `running` row) is
        # repaired now, so it costs this run nothing.
        recover_after_crash(self.store)
        # The ledger first: a run that cannot even start (no accounts) is history too.
        result.run_id = self._open_ledger(result, account_filter, requested_by)
        try:
            self._remember_legacy()
            scope = self._scope(account_ids, result)
        except AdsyncError as exc:
            self._fail(result, exc, started)
            self._close_ledger(result)
            return result
        holder = f"{actor()}:run{result.run_id}:{threading.get_ident()}"
        # Per Base, whichever table holds the date (rolling tables: adsync.sync.tables).
        day_leases = [day_lease(self.settings, d) for d in dates_between(start, end)]
        try:
            # The run's own lease, held from here to the end (waiting for the dates included):
            # how another host's recovery tells this run from a dead one (recovery.py).
            with (
                holding(self.store, [run_lease(result.run_id)], holder, ttl=RUN_LEASE_TTL),
                holding(self.store, day_leases, holder, wait=wait),
            ):
                self._run(result, scope, holder)
        except Busy as exc:
            result.status = "busy"
            result.error, result.hint = exc.message, exc.hint
        except AdsyncError as exc:
            self._fail(result, exc, started)
        except Exception:  # noqa: BLE001 - the ledger must record every ending
            # The ledger and the cards get no exception text (it can carry values, e.g. a
            # database error's statement); the log has it, through the redactor.
            log.exception("run %s crashed", result.run_id)
            result.status = FAILED
            result.error = "an unexpected error stopped the run (the details are in adsync's log)"
        except KeyboardInterrupt:  # Ctrl-C on `adsync sync`: say so in the ledger, then stop
            result.status = INTERRUPTED
            result.error = "interrupted: stopped by the operator (Ctrl-C); sync these dates again"
            result.seconds = round(time.monotonic() - started, 3)
            self._close_ledger(result)
            raise
        result.seconds = round(time.monotonic() - started, 3)
        result.warnings = collapse(result.warnings)
        self._log_causes(result)
        self._close_ledger(result)
        self._progress(Progress(len(result.accounts), len(scope), result.rows, stage="done"))
        return result

    @staticmethod
    def _log_causes(result: RunResult) -> None:
        """One log line per cause of failure with its count (the retries before it are DEBUG):
        an outage is one WARNING, not one per account and attempt."""
        failed = result.failed
        # On the command line the same lines are printed as the result; the log keeps them.
        level = logging.INFO if result.trigger in ("cli", "demo") else logging.WARNING
        for cause in group((a.account_id, a.reason) for a in failed):
            shown = ", ".join(cause.labels[:5]) + (" …" if cause.count > 5 else "")
            log.log(
                level,
                "run %s: %d of %d accounts failed: %s (%s)",
                result.run_id,
                cause.count,
                len(result.accounts),
                cause.text,
                shown,
            )

    # -- the steps ----------------------------------------------------------------------------

    def _remember_legacy(self) -> None:
        """The first run since upgrading to rolling tables: the dates synced before are in
        the configured table. Recorded before this run saves rows of its own."""
        settings = self.settings
        if settings.feishu_bitable_app_token and settings.feishu_bitable_table_id:
            registry = Registry(self.store, settings.feishu_bitable_app_token)
            registry.remember_legacy(settings.feishu_bitable_table_id)

    def _scope(self, account_ids: Sequence[str] | None, result: RunResult) -> list[Account]:
        # Every run refreshes the discovered list first (ADSYNC_ACCOUNTS empty): a new account
        # of an organisation is synced the day it appears; one that is gone is said once here
        # and leaves the scope, instead of failing every day. If the platform cannot be asked,
        # the stored list stands (and a dead authorization is the fetch's to report).
        refreshed = discovery.refresh(self.services)
        result.api_calls += refreshed.api_calls
        result.account_changes = discovery.describe(refreshed.changes)
        result.warnings.extend(refreshed.lines)
        granted = self.services.tokens.granted_account_ids()
        scope = resolve_accounts(self.settings, self.store, granted)
        self._in_scope = {a.id: a.name for a in scope}
        if not account_ids:
            return scope
        chosen = [a for a in scope if a.id in set(account_ids)]
        unknown = sorted(set(account_ids) - {a.id for a in chosen})
        if unknown:
            account_id = ", ".join(unknown)
            ids = ", ".join(a.id for a in scope[:10])
            raise AdsyncError(
                f"account {account_id} is not in scope",
                hint=f"accounts in scope: {ids}{' …' if len(scope) > 10 else ''} (`adsync accounts`)",
            )
        return chosen

    def _run(self, result: RunResult, scope: list[Account], holder: str) -> None:
        chains = self.services.tokens.chains()
        self._refused, self._refused_accounts = {}, {}
        self._routes = discovery.routes(
            chains, self.store, self.settings.oceanengine_app_id or "", [a.id for a in scope]
        )
        names = {a.name: a.id for a in scope if a.name}
        writer = _Writer(self, result, holder, names, len(scope))
        try:
            rows, problem = self._fetch(result, scope, writer.add)
            ok_ids = {a.account_id for a in result.accounts if a.status != FAILED}
            good_rows = [r for r in rows if r.account_id in ok_ids]
            if writer.started:
                self._progress(Progress(len(scope), len(scope), result.rows, stage="write"))
            # Saved while the writer sends its last chunks. Accounts fetched before an
            # authorization died are kept too: every account the result calls ok is synced.
            localcopy.save(self.store, good_rows, result.run_id)
            writer.finish()
        finally:
            writer.close()
        if self._refused:
            self._dead_chains(result, {c.chain_id: c.who for c in chains})
        if problem is not None:
            if not any(a.status != FAILED for a in result.accounts):
                raise problem
            # Other chains' accounts were synced: the run is partial, and says whose
            # authorization is gone and what it left out.
            result.needs_authorization = True
            result.error, result.hint = problem.public_message, problem.public_hint
        result.status = self._status(result)

    def _dead_chains(self, result: RunResult, whose: dict[str, str]) -> None:
        failed = {a.account_id: a for a in result.accounts if a.status == FAILED}
        for chain_id, exc in sorted(self._refused.items()):
            left = [
                failed[i].label for i in sorted(self._refused_accounts[chain_id]) if i in failed
            ]
            who = whose.get(chain_id, chain_id)
            result.dead_chains.append(ChainFailure(chain_id, who, exc.public_message, left))
            if not left:  # every account it reaches was fetched with another chain
                result.warnings.append(
                    f"{exc.public_message}; its accounts were fetched with the other "
                    f"authorizations, but {who} should authorize again"
                )

    def _fetch(
        self,
        result: RunResult,
        scope: list[Account],
        on_rows: Callable[[list[ReportRow]], None] = lambda _rows: None,
    ) -> tuple[list[ReportRow], AuthorizationNeeded | None]:
        """Every account, concurrently; accounts that failed only transiently (after the
        client's own retries) get one more pass once the others are done. Each account's rows
        go to ``on_rows`` as they arrive. Returns the rows and, if it died, the authorization
        error (the accounts not fetched by then are failed)."""
        outcomes = self._fetch_pass(result, scope, len(scope), 0, on_rows)
        retry = [
            a for a in scope if a.id in outcomes and isinstance(outcomes[a.id][2], TransientError)
        ]
        if retry:
            log.info("second pass for %d accounts that failed transiently", len(retry))
            outcomes.update(self._fetch_pass(result, retry, len(scope), len(scope), on_rows))
        rows: list[ReportRow] = []
        for account in scope:
            account_result, fetched, _problem = outcomes.get(
                account.id,
                (
                    AccountResult(
                        account.id, account.name, FAILED, "not fetched: authorization needed"
                    ),
                    [],
                    None,
                ),
            )
            result.accounts.append(account_result)
            rows.extend(fetched)
        result.accounts.sort(key=lambda a: (a.status != FAILED, a.name, a.account_id))
        refused = [p for _r, _rows, p in outcomes.values() if isinstance(p, AuthorizationNeeded)]
        if not refused:
            return rows, None
        messages = list(dict.fromkeys(p.message for p in refused))
        return rows, refused[0] if len(messages) == 1 else AuthorizationNeeded("; ".join(messages))

    def _fetch_pass(
        self,
        result: RunResult,
        accounts_: list[Account],
        total: int,
        done_before: int,
        on_rows: Callable[[list[ReportRow]], None],
    ) -> dict[str, tuple[AccountResult, list[ReportRow], Exception | None]]:
        outcomes: dict[str, tuple[AccountResult, list[ReportRow], Exception | None]] = {}
        fetched_rows = 0
        with ThreadPoolExecutor(
            max_workers=min(self.settings.concurrency, len(accounts_)), thread_name_prefix="fetch"
        ) as pool:
            futures = {
                pool.submit(self._fetch_one, a, result.start, result.end): a for a in accounts_
            }
            for future in as_completed(futures):
                outcome = future.result()
                account_result, fetched, problem = outcome
                outcomes[account_result.account_id] = outcome
                result.api_calls += account_result.api_calls
                fetched_rows += len(fetched)
                if fetched:
                    on_rows(fetched)
                done = min(total, done_before + len(outcomes))
                self._progress(Progress(done, total, fetched_rows, account_result))
        return outcomes

    def _fetch_one(
        self, account: Account, start: date, end: date
    ) -> tuple[AccountResult, list[ReportRow], Exception | None]:
        began = time.monotonic()
        client = self.services.new_client()
        try:
            fetched = self._fetch_with_a_chain(client, account, start, end)
        except AdsyncError as exc:
            res = AccountResult(account.id, account.name, FAILED, exc.public_message)
            return self._timed(res, client, began), [], exc
        except Exception as exc:  # noqa: BLE001 - one account's surprise must not stop the others
            # One traceback per kind of surprise in a run (in the log, never in a card: its
            # text may carry internals); the summary line counts them all.
            with self._seen_lock:
                first = type(exc) not in self._seen
                self._seen.add(type(exc))
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "account %s failed unexpectedly",
                account.id,
                exc_info=True,
            )
            reason = "an unexpected error (the details are in adsync's log)"
            res = AccountResult(account.id, account.name, FAILED, reason)
            return self._timed(res, client, began), [], exc
        finally:
            client.close()
        status = OK if fetched else NO_DATA
        res = AccountResult(account.id, account.name, status, rows=len(fetched))
        return self._timed(res, client, began), fetched, None

    def _fetch_with_a_chain(
        self, client: Any, account: Account, start: date, end: date
    ) -> list[ReportRow]:
        """The account's rows, fetched once: with the first chain of its route that can give a
        token (and may read it); a chain that is dead, or dies now, hands over to the next."""
        route = self._routes.get(account.id)
        candidates: tuple[str | None, ...] = route.chains if route and route.chains else (None,)
        refused: list[AuthorizationNeeded] = []
        for n, chain_id in enumerate(candidates):
            more = n + 1 < len(candidates)
            try:
                return fetch_rows(self.services.api(client, chain_id), account, start, end)
            except AuthorizationNeeded as exc:
                if chain_id is not None:
                    with self._refused_lock:
                        self._refused.setdefault(chain_id, exc)
                        self._refused_accounts.setdefault(chain_id, set()).add(account.id)
                refused.append(exc)
                if more:
                    log.warning(
                        "account %s: %s; trying the next authorization", account.id, exc.message
                    )
                    continue
            except PermanentError as exc:
                if exc.code == NO_PERMISSION and more:
                    log.info(
                        "account %s: %s; trying the next authorization", account.id, exc.message
                    )
                    continue
                raise
        messages = list(dict.fromkeys(e.message for e in refused))
        raise refused[0] if len(messages) == 1 else AuthorizationNeeded("; ".join(messages))

    @staticmethod
    def _timed(res: AccountResult, client: Any, began: float) -> AccountResult:
        res.api_calls = client.stats.calls
        res.seconds = round(time.monotonic() - began, 3)
        return res

    @staticmethod
    def _status(result: RunResult) -> str:
        failed = len(result.failed)
        if not result.accounts:
            return FAILED
        if failed == 0:
            return OK
        return "partial" if failed < len(result.accounts) else FAILED

    def _fail(self, result: RunResult, exc: AdsyncError, started: float) -> RunResult:
        result.status = FAILED
        # What the ledger and the cards may say (a StoreError's message names the database).
        result.error, result.hint = exc.public_message, exc.public_hint
        if exc.public_message != exc.message:
            log.error("run %s failed: %s", result.run_id, exc.message)
        if isinstance(exc, AuthorizationNeeded):
            result.needs_authorization = True
        result.seconds = round(time.monotonic() - started, 3)
        return result

    # -- the local copy and the ledger --------------------------------------------------------

    def _open_ledger(self, result: RunResult, account_filter: str | None, requested_by: str) -> int:
        # Not idempotent (an insert): if the commit's answer is lost, the run does not start
        # and says the outcome is unknown, rather than leave a second `running` row.
        return self.store.transact(
            lambda conn: int(
                conn.execute(
                    insert(runs)
                    .values(
                        started_at=utcnow(),
                        trigger=result.trigger,
                        requested_by=requested_by,
                        date_from=result.start,
                        date_to=result.end,
                        account_filter=account_filter,
                        status="running",
                        holder=actor(),
                    )
                    .returning(runs.c.id)
                ).scalar_one()
            ),
            wait=BACKGROUND_WAIT_SECONDS,
        )

    def _close_ledger(self, result: RunResult) -> None:
        if result.run_id is None:
            return
        now = utcnow()
        # Idempotent, so rerun after a lost commit: the per-account rows are replaced, not added.
        self.store.transact(
            lambda conn: self._write_ledger(conn, result, now),
            wait=BACKGROUND_WAIT_SECONDS,
            idempotent=True,
        )

    @staticmethod
    def _write_ledger(conn: Connection, result: RunResult, now: datetime) -> None:
        conn.execute(delete(run_accounts).where(run_accounts.c.run_id == result.run_id))
        conn.execute(
            update(runs)
            .where(runs.c.id == result.run_id)
            .values(
                finished_at=now,
                status=result.status,
                api_calls=result.api_calls,
                rows_created=result.created,
                rows_updated=result.updated,
                rows_unchanged=result.unchanged,
                rows_deleted=result.deleted,
                error=result.error or None,
                detail=json.dumps(result.to_json(), ensure_ascii=False, default=str),
            )
        )
        for a in result.accounts:
            conn.execute(
                insert(run_accounts).values(
                    run_id=result.run_id,
                    account_id=a.account_id,
                    status=a.status,
                    reason=a.reason or None,
                    rows=a.rows,
                    api_calls=a.api_calls,
                )
            )
            conn.execute(
                update(accounts)
                .where(accounts.c.account_id == a.account_id)
                .values(
                    last_synced_at=now if a.status != FAILED else accounts.c.last_synced_at,
                    last_outcome=a.status,
                    last_reason=a.reason or None,
                )
            )


class _Writer:
    """The Bitable side of a run, on a thread of its own. Started by the first account's rows
    (a run whose every account failed never touches the Base); it takes the Base's writer
    lease, looks at the Base's tables and reads the dates while the fetch goes on, then hands
    each account's rows to the routed upsert (each date into its table, see
    adsync.sync.routing)."""

    def __init__(
        self, runner: Runner, result: RunResult, holder: str, names: dict[str, str], accounts: int
    ) -> None:
        self._runner, self._result = runner, result
        self._holder, self._names, self._accounts = holder, names, accounts
        self._queue: queue.Queue[list[ReportRow] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._abandon = threading.Event()
        self._error: BaseException | None = None
        self._upsert: RoutedResult | None = None
        self._routed: RoutedUpsert | None = None
        self._calls_before = 0
        self._view_warnings: list[str] = []

    @property
    def started(self) -> bool:
        return self._thread is not None

    def add(self, rows: list[ReportRow]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="bitable-writer", daemon=True)
            self._thread.start()
        self._queue.put(rows)

    def finish(self) -> None:
        """Wait for every handed-over row to be written; put the outcome in the result, or
        raise what stopped the writer."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join()
        self._count_calls()
        if self._routed is not None:
            self._result.table_events = list(self._routed.ts.events)
        if self._error is not None:
            # What was written before the failure was written: say so, never "0 created".
            if self._routed is not None:
                self._take(self._routed.written())
            raise self._error
        routed = self._upsert
        assert routed is not None
        self._take(routed.upsert)
        result = self._result
        result.warnings.extend(routed.upsert.warnings)
        result.warnings.extend(self._view_warnings)
        result.table_events = routed.events
        settings = self._runner.settings
        result.table_forecast = forecast(
            self._runner.store, settings, utcnow().astimezone(settings.tz).date()
        )

    def _take(self, upsert: UpsertResult) -> None:
        result = self._result
        result.created, result.updated = upsert.created, upsert.updated
        result.unchanged, result.deleted = upsert.unchanged, upsert.deleted
        result.confirmed_after_timeout = upsert.confirmed_after_timeout

    def close(self) -> None:
        """After a crash elsewhere: stop after the write in flight, write nothing more."""
        if self._thread is None or not self._thread.is_alive():
            return
        self._abandon.set()
        self._queue.put(None)
        self._thread.join()
        self._count_calls()

    def _count_calls(self) -> None:
        if self._routed is not None:
            self._result.feishu_calls = self._routed.ts.caller.calls - self._calls_before

    def _work(self) -> None:
        runner, result = self._runner, self._result
        try:
            # One writer per Base: the registry and new tables have one author at a time, and
            # the platform refuses overlapping writes to a table (1254291).
            lease = write_lease(runner.settings)
            with holding(runner.store, [lease], self._holder, wait=600):
                from adsync.sync.routing import RoutedUpsert

                tables = runner._tables()
                self._calls_before = tables.caller.calls
                routed = self._routed = RoutedUpsert(
                    tables,
                    dates_between(result.start, result.end),
                    run_tag=f"run{result.run_id}",
                    synced_at=utcnow(),
                    account_names=self._names,
                    accounts_total=self._accounts,
                )
                routed.open()
                while (rows := self._queue.get()) is not None:
                    if self._abandon.is_set():
                        return
                    routed.add(rows)
                if not self._abandon.is_set():
                    self._upsert = routed.finish()
                    self._views(tables)  # still the Base's one writer: each view made once
        except BaseException as exc:  # noqa: BLE001 - raised again by finish(), in the run
            self._error = exc

    def _views(self, tables: TableSet) -> None:
        """Per-account views after the writes: nothing asked of the platform unless a view is
        missing or its account was renamed. Never fails the run: a problem is a warning."""
        from adsync.sync.views import ViewKeeper

        runner, result = self._runner, self._result
        today = utcnow().astimezone(runner.settings.tz).date()
        try:
            keeper = ViewKeeper(tables)
            # The morning run looks at every table once a day; other runs only act on what
            # the ledger says is missing (usually no call at all).
            check = keeper.daily if result.trigger == "schedule" else keeper.after_sync
            done = check(runner._in_scope, today)
        except Exception as exc:  # noqa: BLE001 - the rows are written; views can wait
            log.warning("run %s: per-account views not updated", result.run_id, exc_info=True)
            why = exc.public_message if isinstance(exc, AdsyncError) else "an unexpected error"
            self._view_warnings = [
                f"per-account views not updated: {why} → run `adsync views` to try again"
            ]
            return
        self._view_warnings = done.warnings
        result.view_changes = [
            f"view {v.view_name} ({v.account_id}) {v.state.replace('-', ' ')} in "
            f"{v.table_name or v.table_id}" + (f": {v.note}" if v.note else "")
            for v in done.changes
        ]


def recent_runs(services: Services, limit: int = 10) -> list[dict[str, Any]]:
    """The last ``limit`` runs, newest first, each with why it failed or was partial:
    ``failures`` (account, reason), ``causes`` (one per cause, with its count) and ``why``,
    one line: the run's error, then "3 accounts: 40002 no permission … (2), … (1)"."""

    def read(conn: Connection) -> tuple[list[dict[str, Any]], list[Any]]:
        found = [
            dict(r._mapping)
            for r in conn.execute(select(runs).order_by(runs.c.id.desc()).limit(limit))
        ]
        ids = [r["id"] for r in found]
        failed = []
        if ids:
            query = (
                select(run_accounts.c.run_id, run_accounts.c.account_id, run_accounts.c.reason)
                .where(run_accounts.c.run_id.in_(ids), run_accounts.c.status == FAILED)
                .order_by(run_accounts.c.id)
            )
            failed = list(conn.execute(query))
        return found, failed

    found, failed_rows = services.store.read(read)
    failures: dict[int, list[tuple[str, str]]] = {r["id"]: [] for r in found}
    for run_id, account_id, reason in failed_rows:
        failures[run_id].append((account_id, reason or ""))
    for run in found:
        failed = failures[run["id"]]
        causes = group(failed)
        run["failures"] = [{"account_id": a, "reason": r} for a, r in failed]
        run["causes"] = [
            {"cause": c.short, "count": c.count, "reason": c.text, "fix": c.fix} for c in causes
        ]
        parts = [cause_of(run["error"])[0]] if run["error"] else []
        line = causes_line([r for _a, r in failed])
        # A run killed by one cause lists its accounts under it: say it once, not twice.
        if line and not (len(causes) == 1 and parts and parts[0] == causes[0].short):
            parts.append(line)
        elif line:
            parts = [line]
        run["why"] = "; ".join(parts)
    return found


__all__ = [
    "AccountResult",
    "ChainFailure",
    "Progress",
    "RunResult",
    "Runner",
    "recent_runs",
]
