"""The real CLI in child processes: authorization, token commands, doctor, exit codes, and
no secret in any output or log file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select

from adsync.sync.store import Store, tokens

from .conftest import FEISHU_SECRET, OE_SECRET, Sandbox, run_cli


def _tokens_in(db_url: str) -> set[str]:
    store = Store(db_url)
    with store.engine.connect() as conn:
        rows = conn.execute(select(tokens.c.access_token, tokens.c.refresh_token)).all()
    store.dispose()
    return {t for row in rows for t in row}


def test_no_secret_reaches_stdout_stderr_or_the_log_file(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    log_file = tmp_path / "logs" / "adsync.log"
    keys = {
        "FEISHU_ENCRYPT_KEY": "sandbox-encrypt-key-c41d",
        "FEISHU_VERIFICATION_TOKEN": "vt-9e0b2a",
    }
    env = {**env, **keys, "ADSYNC_LOG_FILE": str(log_file), "ADSYNC_LOG_LEVEL": "DEBUG"}
    secrets = {OE_SECRET, FEISHU_SECRET, *keys.values()}
    outputs: list[str] = []

    def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = run_cli(["-v", *args], env)
        outputs.extend([result.stdout, result.stderr])
        assert result.returncode == code, (args, result.stdout, result.stderr)
        secrets.update(_tokens_in(env["ADSYNC_DATABASE_URL"]))
        return result

    run("auth", "url")
    run("auth", "url", "--json")
    auth_code = sandbox.auth_code()
    secrets.add(auth_code)
    granted = run("auth", "code", auth_code)
    assert "accounts granted" in granted.stdout
    run("token", "status")
    status = json.loads(run("token", "status", "--json").stdout)
    assert status["health"] == "ok" and status["authorized"]
    run("token", "refresh")
    run("token", "refresh", "--json")
    run("doctor")
    run("auth", "code", auth_code, code=3)  # reused
    sandbox.faults(oceanengine={"scripted": [{"path": "refresh_token", "code": 40107}]})
    dead = run("token", "refresh", code=3)
    assert "audit/oauth.html?app_id=" in dead.stderr  # the link to fix it
    outputs.append(log_file.read_text(encoding="utf-8"))
    everything = "\n".join(outputs)
    assert "refreshed" in everything or "Refreshed" in everything  # the log is really written
    assert len(secrets) >= 8
    for secret in secrets:
        assert secret not in everything, f"a secret leaked: {secret[:4]}…"


def test_reused_auth_code_exits_3_with_a_clear_message(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    code = sandbox.auth_code()
    assert run_cli(["auth", "code", code], env).returncode == 0
    again = run_cli(["auth", "code", code], env)
    assert again.returncode == 3
    assert "already used or has expired" in again.stderr
    assert "Traceback" not in again.stderr


def test_missing_app_id_exits_2_naming_it(env: dict[str, str]) -> None:
    env = {k: v for k, v in env.items() if k != "OCEANENGINE_APP_ID"}
    for args in (["auth", "url"], ["token", "status"], ["token", "refresh"]):
        result = run_cli(args, env)
        assert result.returncode == 2, args
        assert "OCEANENGINE_APP_ID is not set" in result.stderr
        assert "Traceback" not in result.stderr


def test_malformed_value_exits_2_naming_it(env: dict[str, str]) -> None:
    result = run_cli(["token", "status"], {**env, "ADSYNC_REFRESH_MARGIN": "soon"})
    assert result.returncode == 2
    assert "ADSYNC_REFRESH_MARGIN is malformed" in result.stderr


def test_unreadable_database_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "broken.db"
    bad.write_bytes(b"\x00garbage" * 512)
    result = run_cli(["token", "status"], {**env, "ADSYNC_DATABASE_URL": f"sqlite:///{bad}"})
    assert result.returncode == 2
    assert "not a database" in result.stderr and "ADSYNC_DATABASE_URL" in result.stderr
    assert "Traceback" not in result.stderr
    doctor = run_cli(["doctor"], {**env, "ADSYNC_DATABASE_URL": f"sqlite:///{bad}"})
    assert doctor.returncode == 2 and "✗ database" in doctor.stdout


def test_token_status_before_authorization_says_what_to_do(env: dict[str, str]) -> None:
    result = run_cli(["token", "status"], env)
    assert result.returncode == 3
    assert "adsync auth url" in result.stdout


def test_doctor_reports_each_failing_check_with_its_fix(
    sandbox: Sandbox, env: dict[str, str], cli: Any
) -> None:
    env = {k: v for k, v in env.items() if k != "OCEANENGINE_REDIRECT_URI"}
    result = cli(["doctor", "--json"], env)
    doc: dict[str, Any] = json.loads(result.stdout)
    by_name = {c["name"]: c for c in doc["checks"]}
    assert not by_name["redirect URI"]["ok"]
    assert "OCEANENGINE_REDIRECT_URI" in by_name["redirect URI"]["fix"]
    assert by_name["database"]["ok"] and by_name["Ocean Engine reachable"]["ok"]
    assert not by_name["token"]["ok"] and "adsync auth url" in by_name["token"]["fix"]
    assert result.returncode == 3


def test_doctor_passes_when_all_is_well(sandbox: Sandbox, env: dict[str, str], cli: Any) -> None:
    env = {**env, "FEISHU_ENCRYPT_KEY": "sandbox-encrypt-key", "FEISHU_VERIFICATION_TOKEN": "vt"}
    assert cli(["auth", "code", sandbox.auth_code()], env).returncode == 0
    result = cli(["doctor"], env)
    assert result.returncode == 0, result.stdout
    assert "all checks passed" in result.stdout


def test_unreachable_ocean_engine_is_named_in_doctor(env: dict[str, str], cli: Any) -> None:
    result = cli(["doctor"], {**env, "OCEANENGINE_API_BASE": "http://127.0.0.1:9"})
    assert result.returncode != 0
    assert "✗ Ocean Engine reachable" in result.stdout and "OCEANENGINE_API_BASE" in result.stdout


def test_help_and_token_status_do_not_import_lark_oapi(env: dict[str, str]) -> None:
    probe = (
        "import sys\n"
        "from adsync.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED:' + ','.join(m for m in ('lark_oapi', 'flask') if m in sys.modules))\n"
    )
    for args in (["--help"], ["token", "status"]):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args],
            env={"PATH": "", **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.stdout.strip().endswith("LOADED:"), (args, result.stdout[-200:])
