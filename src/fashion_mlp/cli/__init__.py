"""The fashion-mlp command: parses arguments, builds a config, calls the API, prints for a person.

parser.py holds the grammar, commands.py what each subcommand does; this file runs one and turns
every error a user can cause into one line on stderr (exit 2 for bad input, 1 for a failed run).
Only the grammar is imported up front: `--help` answers before NumPy's heavier neighbours (matplotlib,
Optuna, Pillow) load, and each command imports what it needs when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..extras import MissingExtraError
from .parser import CONFIG_FLAGS, UsageError, build_parser

__all__ = ["CONFIG_FLAGS", "UsageError", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        from . import commands

        return int(getattr(commands, f"cmd_{args.handler}")(args) or 0)
    except (UsageError, MissingExtraError) as err:
        return _fail(str(err), 2)
    except (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError, PermissionError) as err:
        return _fail(str(err), 2)
    except RuntimeError as err:
        from ..train import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            return _fail(str(err), 1)
        raise
    except OSError as err:
        return _fail(str(err), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _fail(message: str, code: int) -> int:
    print(f"fashion-mlp: error: {message}", file=sys.stderr)
    return code
