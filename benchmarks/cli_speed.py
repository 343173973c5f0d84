"""How fast the command line answers: `fashion-mlp --help`, `--version` and every `COMMAND --help`.

Each is run as a fresh process five times (after one warm-up for the file cache); the table gives the
median wall time against the 0.3 s target. Run: `make bench-cli` or `python benchmarks/cli_speed.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from fashion_mlp.cli import build_parser

TARGET_S = 0.3
RUNS = 5


def commands() -> list[list[str]]:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices  # argparse's own table
    return [["--help"], ["--version"], *([name, "--help"] for name in subcommands)]


def seconds(argv: list[str]) -> float:
    executable = Path(sys.executable).with_name("fashion-mlp")
    start = time.perf_counter()
    subprocess.run([str(executable), *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; median of {RUNS} fresh processes\n")
    print("| command | median | slowest | target |")
    print("|---|---|---|---|")
    slow = 0
    for argv in commands():
        seconds(argv)  # warm-up
        times = [seconds(argv) for _ in range(RUNS)]
        median = statistics.median(times)
        slow += median > TARGET_S
        verdict = "met" if median <= TARGET_S else "MISSED"
        print(f"| fashion-mlp {' '.join(argv)} | {median:.3f} s | {max(times):.3f} s | {verdict} |")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
