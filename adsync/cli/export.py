"""``adsync export``: rows of the local copy to an xlsx or csv file (``adsync.sync.export``)."""

from __future__ import annotations

from pathlib import Path

from adsync.cli.args import resolve_account, today, when_text
from adsync.cli.context import Context
from adsync.cli.fmt import print_json
from adsync.sync.dates import parse_period
from adsync.sync.errors import ConfigError

MAX_DAYS = 366  # local data only: a year is one command


def export(ctx: Context) -> int:
    from adsync.sync import export as ex

    start, end = parse_period(when_text(ctx), today(ctx), MAX_DAYS)
    fmt = _format(ctx.args.format, ctx.args.output)
    store = ctx.services.store
    account = None
    if ctx.args.account:
        known = ex.known_accounts(store, start, end)
        account_id = resolve_account(ctx.args.account, known)
        account = (account_id, dict(known)[account_id])
    result = ex.collect(
        store,
        start,
        end,
        tz=ctx.settings.tz,
        account=account,
        mapping=ctx.settings.bitable_fields,
    )
    path = Path(ctx.args.output).expanduser() if ctx.args.output else Path.cwd()
    written = ex.write(result, fmt, path, force=ctx.args.force)
    if ctx.json:
        doc = result.to_json()
        doc.update(path=str(written.path), format=fmt, bytes=written.bytes)
        print_json(doc)
        return 0
    t = result.totals
    who = f" · {account[1] or account[0]} ({account[0]})" if account else ""
    sheets = f", {len(result.sheets)} sheets" if fmt == "xlsx" and len(result.sheets) > 1 else ""
    ctx.say(f"Exported {result.label}{who}: {written.path} ({written.bytes:,} bytes{sheets})")
    ctx.say(
        f"  {t.rows:,} rows · {result.account_count} accounts · spend ¥{t.cost:,.2f} · "
        f"conversions {t.convert_cnt:,} · group-buy leads {t.clue_cnt:,}"
    )
    return 0


def _format(asked: str | None, output: str | None) -> str:
    """--format, else the --output file's suffix, else xlsx."""
    suffix = Path(output).suffix.lower().lstrip(".") if output else ""
    if asked and suffix in ("xlsx", "csv") and suffix != asked:
        raise ConfigError(
            f"--format {asked} but --output ends in .{suffix}",
            hint="make them agree (or leave --format out: the suffix decides)",
        )
    return asked or (suffix if suffix in ("xlsx", "csv") else "xlsx")
