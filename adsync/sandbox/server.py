"""One HTTP server for both simulated platforms, plus a control API for tests and the demo.

Ocean Engine paths live under ``/open_api/`` (and its authorization page under ``/audit/``),
Feishu paths under ``/open-apis/``; they never collide, so one base URL serves as both
``OCEANENGINE_API_BASE`` and ``FEISHU_DOMAIN``.

Control API (JSON):
  POST /_sandbox/reset                 {"oceanengine": {...options}, "feishu": {...options}}
  POST /_sandbox/faults                {"oceanengine": {...FaultConfig}, "feishu": {...}}
  GET  /_sandbox/stats                 call counters per platform
  GET  /_sandbox/health
  and each platform's own routes under /_sandbox/<platform>/...
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
from pathlib import Path
from typing import Any, Protocol

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

from adsync.sandbox.faults import FaultInjector


class Platform(Protocol):
    name: str
    faults: FaultInjector

    def register(self, app: Flask) -> None: ...
    def reset(self, options: dict[str, Any]) -> None: ...
    def stats(self) -> dict[str, Any]: ...


def create_app(seed: int = 1, platforms: list[Platform] | None = None) -> Flask:
    if platforms is None:
        # Imported here so one platform can be served (and tested) without the other module.
        from adsync.sandbox.feishu import FeishuSandbox
        from adsync.sandbox.oceanengine import OceanEngineSandbox

        platforms = [OceanEngineSandbox(seed=seed), FeishuSandbox(seed=seed)]
    by_name = {p.name: p for p in platforms}
    app = Flask("adsync.sandbox")
    # Room for a 30 MB file upload and its multipart envelope (the platform's own limit is
    # answered by the upload route, 234006); a larger body is refused here with 413.
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024
    app.extensions["adsync_sandbox"] = by_name
    for platform in platforms:
        platform.register(app)

    # Requests still being answered. A test that kills a client mid-request waits for this to
    # reach zero before reading the platform's state, instead of sleeping and hoping.
    # Per path, the most requests in the server's hands at once since the last reset: how a
    # test proves two calls overlapped (two chains refreshing at the same time) rather than
    # one waiting for the other — without timing anything.
    in_flight = {"n": 0}
    by_path: dict[str, int] = {}
    peaks: dict[str, int] = {}
    in_flight_lock = threading.Lock()

    @app.before_request
    def _enter() -> None:
        if not request.path.startswith("/_sandbox/"):
            with in_flight_lock:
                in_flight["n"] += 1
                now = by_path[request.path] = by_path.get(request.path, 0) + 1
                peaks[request.path] = max(peaks.get(request.path, 0), now)

    @app.teardown_request
    def _leave(_exc: BaseException | None) -> None:
        if not request.path.startswith("/_sandbox/"):
            with in_flight_lock:
                in_flight["n"] -= 1
                by_path[request.path] = by_path.get(request.path, 1) - 1

    @app.get("/_sandbox/in_flight")
    def in_flight_view() -> Any:
        with in_flight_lock:
            return jsonify({"in_flight": in_flight["n"], "peaks": dict(peaks)})

    @app.post("/_sandbox/in_flight/reset")
    def in_flight_reset() -> Any:
        with in_flight_lock:
            peaks.clear()
            return jsonify({"ok": True})

    def _body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}

    @app.post("/_sandbox/reset")
    def reset() -> Any:
        body = _body()
        for name, platform in by_name.items():
            platform.reset(body.get(name) or {})
            platform.faults.reset()
        return jsonify({"ok": True})

    @app.post("/_sandbox/faults")
    def faults() -> Any:
        body = _body()
        try:
            for name, cfg in body.items():
                if name not in by_name:
                    raise ValueError(f"unknown platform {name!r}")
                by_name[name].faults.configure(cfg or {})
        except (TypeError, ValueError) as exc:
            return jsonify({"ok": False, "error": str(exc)}), 400
        return jsonify({n: p.faults.as_dict() for n, p in by_name.items()})

    @app.get("/_sandbox/stats")
    def stats() -> Any:
        return jsonify({n: p.stats() for n, p in by_name.items()})

    @app.get("/_sandbox/health")
    def health() -> Any:
        return jsonify({"ok": True, "platforms": sorted(by_name)})

    return app


class SandboxServer:
    """The sandbox on a loopback port in a background thread: ``with SandboxServer() as s: s.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        platforms: list[Platform] | None = None,
    ) -> None:
        self.app = create_app(seed=seed, platforms=platforms)
        self._server = make_server(host, port, self.app, threaded=True)
        self.host = host
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="adsync-sandbox", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adsync sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--write-env", metavar="PATH", help="also write the .env block to PATH (mode 0600)"
    )
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print("adsync sandbox only listens on loopback", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        server = SandboxServer(args.host, args.port, seed=args.seed)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        print("  → choose another port: adsync sandbox --port 8101 (or 0 for any)", file=sys.stderr)
        return 2
    from adsync.sandbox.envfile import EnvFileExists, env_block, write_env

    if args.write_env:
        try:
            write_env(Path(args.write_env), server.url)
        except (EnvFileExists, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            print("  → choose another path, or remove that file", file=sys.stderr)
            return 2
    # One machine-readable line first, so a parent process can learn the port (--port 0); then
    # the settings that point adsync here, ready to paste into a .env.
    print(json.dumps({"sandbox": server.url}), flush=True)
    print(f"\n{env_block(server.url)}", flush=True)
    if args.write_env:
        print(f"# written to {args.write_env} (mode 0600)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
