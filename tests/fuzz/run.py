"""`make fuzz`: coverage-guided fuzzing of one target with atheris, for as long as asked.

    python -m tests.fuzz.run TARGET [--seconds N]      (TARGET: one of targets.TARGETS, or "list")

The corpus starts from the target's seeds (real files of its kind). An input that breaks the
property (targets.py) stops the run with its traceback and leaves the input in crash-*; keep it as
a regression test. libFuzzer's last line says how many inputs it ran ("Done N runs in S second(s)").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["fashion_mlp"]):
    from tests.fuzz import targets


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", choices=[*sorted(targets.TARGETS), "list"])
    parser.add_argument("--seconds", type=int, default=600, help="how long to fuzz (default 600)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory per input (default 2048)")
    args = parser.parse_args()
    if args.target == "list":
        print("\n".join(sorted(targets.TARGETS)))
        return
    target = targets.TARGETS[args.target]
    corpus = Path(tempfile.mkdtemp(prefix=f"corpus-{target.name}-"))
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    libfuzzer = [
        f"-max_total_time={args.seconds}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        "-timeout=30",
        "-print_final_stats=1",
        "-artifact_prefix=crash-" + target.name + "-",
    ]
    atheris.Setup([sys.argv[0], *libfuzzer, str(corpus)], target.check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
