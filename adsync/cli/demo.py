"""`adsync demo`: the whole system against the sandbox, with no credentials and no setup.

It ignores the operator's own configuration (a demo must never touch a real token store): the
sandbox runs on a free loopback port and the state lives in a temporary directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import requests

from adsync.cli.auth import render_status
from adsync.cli.context import Context
from adsync.cli.sync import render
from adsync.sandbox.envfile import sandbox_environment
from adsync.sandbox.feishu import Options as FeishuOptions
from adsync.sandbox.oceanengine import Options as OceanEngineOptions
from adsync.sync.config import load_settings

SANDBOX_OE_APP = (OceanEngineOptions.app_id, OceanEngineOptions.secret)
SANDBOX_FEISHU_APP = (FeishuOptions.app_id, FeishuOptions.app_secret)


def demo_environment(sandbox_url: str, data_dir: Path) -> dict[str, str]:
    """Settings that point every platform at the sandbox (what `adsync sandbox` prints), the
    state in ``data_dir``, and short waits."""
    return {
        **sandbox_environment(sandbox_url),
        "ADSYNC_DATA_DIR": str(data_dir),
        "ADSYNC_RETRY_BASE_DELAY": "0.05",
        "ADSYNC_RATE_LIMIT": "50",
        "ADSYNC_BITABLE_WRITE_GAP": "0.02",
    }


def browser_authorize(auth_url: str) -> str:
    """Do what a person does in the browser: open the link, consent, land on the redirect
    URI carrying ``auth_code``. The sandbox's page consents at once."""
    response = requests.get(auth_url, allow_redirects=False, timeout=10)
    response.raise_for_status()
    location = response.headers["Location"]
    return parse_qs(urlparse(location).query)["auth_code"][0]


def demo(ctx: Context) -> int:
    from adsync.sandbox.server import SandboxServer
    from adsync.sync.runner import Runner
    from adsync.sync.services import open_services

    # Only the demo's own settings count (passed explicitly below, never os.environ or a
    # .env), and its loopback calls never go through the operator's HTTP proxy.
    loopback = "127.0.0.1,localhost"
    for name in ("NO_PROXY", "no_proxy"):
        os.environ[name] = ",".join(p for p in (os.environ.get(name), loopback) if p)
    data_dir = Path(tempfile.mkdtemp(prefix="adsync-demo-"))
    try:
        with SandboxServer(port=0) as sandbox:
            settings = load_settings(demo_environment(sandbox.url, data_dir), cwd=data_dir)
            services = open_services(settings)
            demo_ctx = Context(settings, ctx.args, ctx.out, services)
            say = demo_ctx.say
            say(f"▸ sandbox     {sandbox.url}  (simulated Ocean Engine + Feishu, loopback only)")
            say(f"▸ database    {services.store.url_for_humans}")
            url = services.tokens.authorization_url(requested_by="demo")
            say("▸ authorize   opening the authorization link and consenting …")
            result = services.tokens.authorize(browser_authorize(url))
            say(f"              {len(result.account_ids)} local-push accounts granted:")
            for account_id in result.account_ids:
                say(f"                {account_id}  {result.names.get(account_id, '')}")
            say("▸ token")
            render_status(demo_ctx, services.tokens.status())
            say("")
            say("▸ sync        yesterday → the sandbox Bitable")
            today = datetime.now(settings.tz).date()
            yesterday = today - timedelta(days=1)
            result = Runner(services).run(yesterday, yesterday, trigger="demo", requested_by="demo")
            render(demo_ctx, result)
            week = Runner(services).run(
                yesterday - timedelta(days=7), yesterday - timedelta(days=1), trigger="demo"
            )
            say("")
            say(f"▸ backfill    the 7 days before, for the summary's trend: {week.rows} rows")
            say("")
            say("▸ chat        the same commands people type in the Feishu group (`adsync chat`)")
            say("")
            from adsync.bot.actions import Actions
            from adsync.bot.console import Console

            Console(Actions(services), ctx.out).run(
                ["help", "sync yesterday", "报告 昨天", "summary", "token 状态"], interactive=False
            )
            services.close()
    finally:
        if ctx.args.keep:
            ctx.say(f"(data kept in {data_dir})")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0
