"""The fashion-mlp command: parses arguments, builds a config, calls the API, prints for a person.

parser.py holds the grammar, commands.py what each subcommand does; this file runs one and turns
every error a user can cause into one line on stderr (exit 2 for bad input, 1 for a failed run).
Only the grammar is imported up front: `--help` answers before NumPy's heavier neighbours (matplotlib,
Optuna, Pillow) load, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

from ..errors import UserError
from .parser import CONFIG_FLAGS, DEBUG_ENV, UsageError, build_parser

__all__ = ["CONFIG_FLAGS", "UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Our own errors (bad flags, values, files) are one line and exit 2; the
    machine's (a full disk, a refused permission) one line and exit 1; anything else is a bug of ours:
    one line saying so, exit 1, and the traceback with --debug or FASHION_MLP_DEBUG=1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from . import commands

        return int(getattr(commands, f"cmd_{args.handler}")(args) or 0)
    except UserError as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as err:
        from ..train import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            return _fail(str(err), 1)
        if isinstance(err, OSError) and not debug:  # the machine's, not ours: a disk, a permission
            return _fail(str(err), 1)
        if debug:
            traceback.print_exc()
        hint = "" if debug else f"; run again with --debug (or {DEBUG_ENV}=1) for the traceback"
        return _fail(f"internal error, a bug in fashion-mlp: {type(err).__name__}: {err}{hint}", 1)


def _fail(message: str, code: int) -> int:
    print(f"fashion-mlp: error: {message}", file=sys.stderr)
    return code
