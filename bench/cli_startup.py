"""CLI start-up: `adsync --help` and `adsync token status` beside `python -c "import lark_oapi"`.

Each command runs N times in a fresh process; we print the median wall time and the median
peak RSS (from wait4's rusage, per child), and their ratios to the lark-oapi import. Target:
both commands at 0.1x or less of the import's time. Run: `.venv/bin/python bench/cli_startup.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def measure(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    walls, rss = [], []
    for _ in range(runs):
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - started)
        rss.append(usage.ru_maxrss / 1024)  # KiB -> MiB
        proc.returncode = os.waitstatus_to_exitcode(status)
    return statistics.median(walls), statistics.median(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    data = tempfile.mkdtemp(prefix="adsync-bench-")
    env = {
        **os.environ,
        "OCEANENGINE_APP_ID": "1700000000000001",
        "ADSYNC_DATA_DIR": data,
        "ADSYNC_DATABASE_URL": f"sqlite:///{data}/adsync.db",
    }
    py = sys.executable
    cases = [
        ("import lark_oapi", [py, "-c", "import lark_oapi"]),
        ("adsync --help", [py, "-m", "adsync", "--help"]),
        ("adsync token status", [py, "-m", "adsync", "token", "status"]),
        # References: what no Python command can go under, and what storage alone costs
        # (token status reads the database through SQLAlchemy, as every command does).
        ("python -c pass", [py, "-c", "pass"]),
        ("import sqlalchemy", [py, "-c", "import sqlalchemy"]),
    ]
    # Interleave the cases round by round so machine noise hits them alike.
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    for _ in range(args.runs):
        for name, cmd in cases:
            results[name].append(measure(cmd, env, 1))
    med = {
        name: (statistics.median(w for w, _ in r), statistics.median(m for _, m in r))
        for name, r in results.items()
    }
    base_wall, base_rss = med["import lark_oapi"]
    print(f"median of {args.runs} runs each, interleaved; ratios against `import lark_oapi`")
    print(f"{'command':<22}{'wall s':>9}{'x time':>9}{'peak MiB':>10}{'x memory':>10}")
    for name, (wall, rss) in med.items():
        print(f"{name:<22}{wall:>9.3f}{wall / base_wall:>9.3f}{rss:>10.1f}{rss / base_rss:>10.3f}")
    worst = max(med["adsync --help"][0], med["adsync token status"][0]) / base_wall
    print(
        f"target <= 0.100x of the import's time: {'met' if worst <= 0.1 else 'NOT met'} ({worst:.3f}x)"
    )
    return 0 if worst <= 0.1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
