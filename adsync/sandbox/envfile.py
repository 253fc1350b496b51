"""The settings that point adsync at a running sandbox, as a ready ``.env``.

``adsync sandbox`` prints them on start (and ``--write-env PATH`` writes them), so nobody has to
read the demo's code for the sandbox's app ids, secrets, table and chat. Every value comes from
the platforms' own defaults here, so the file and the simulators cannot drift apart. The
secrets are the sandbox's public test values, not anyone's credentials.
"""

from __future__ import annotations

import os
from pathlib import Path

from adsync.sandbox.feishu import Options as FeishuOptions
from adsync.sandbox.oceanengine import Options as OceanEngineOptions

MARKER = "# adsync sandbox settings"  # first line: a file with it may be overwritten
REPORT_CHAT = "oc_sandbox_reports"  # the chat the Feishu sandbox starts with (the bot is in it)
# Event security for `adsync serve` against the sandbox: any non-empty values work, these are
# the ones tests seal sandbox events with.
ENCRYPT_KEY = "sandbox-encrypt-key"
VERIFICATION_TOKEN = "sandbox-verification-token"
REDIRECT_URI = "http://127.0.0.1:8000/oauth/oceanengine/callback"  # `adsync serve`'s default


def sandbox_environment(url: str) -> dict[str, str]:
    """Every setting adsync needs to run against the sandbox at ``url``."""
    oe, feishu = OceanEngineOptions(), FeishuOptions()
    return {
        "OCEANENGINE_APP_ID": oe.app_id,
        "OCEANENGINE_APP_SECRET": oe.secret,
        "OCEANENGINE_API_BASE": url,
        "OCEANENGINE_AUTH_URL": f"{url}/audit/oauth.html",
        "OCEANENGINE_REDIRECT_URI": REDIRECT_URI,
        "FEISHU_APP_ID": feishu.app_id,
        "FEISHU_APP_SECRET": feishu.app_secret,
        "FEISHU_DOMAIN": url,
        "FEISHU_ENCRYPT_KEY": ENCRYPT_KEY,
        "FEISHU_VERIFICATION_TOKEN": VERIFICATION_TOKEN,
        "FEISHU_BITABLE_APP_TOKEN": feishu.app_token,
        "FEISHU_BITABLE_TABLE_ID": feishu.table_id,
        "FEISHU_REPORT_CHAT_IDS": REPORT_CHAT,
    }


def env_block(url: str) -> str:
    """The ``.env`` text, with a comment saying what it is and what to do next."""
    lines = [
        MARKER,
        f"# The simulated Ocean Engine and Feishu at {url} (loopback only, test values).",
        "# Next: `adsync auth url`, open the link (the sandbox consents at once), copy auth_code",
        "# from the address you land on into `adsync auth code CODE` (or let `adsync serve`",
        "# finish it); then `adsync sync`, `adsync summary`, `adsync chat`. State: ./data.",
    ]
    lines += [f"{name}={value}" for name, value in sandbox_environment(url).items()]
    return "\n".join(lines) + "\n"


class EnvFileExists(Exception):
    """The path holds a file that is not a sandbox ``.env``: it is never overwritten."""


def write_env(path: Path, url: str) -> None:
    """Write the block to ``path``, readable by its owner only (0600: it holds secrets, even
    if only the sandbox's). An existing file is replaced only if it is one of these."""
    if path.exists():
        try:
            first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        except (OSError, UnicodeDecodeError):
            first = ""
        if first != MARKER:
            raise EnvFileExists(f"{path} exists and is not a sandbox .env; not overwriting it")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file may have had wider permissions
        out.write(env_block(url))
