"""Optional dependencies: import one, or say in one line which extra installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the pip command that adds it."""


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise MissingExtraError naming ``pip install 'fashion-mlp[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"this needs the {module} package, which is not installed: pip install 'fashion-mlp[{extra}]'"
        ) from None
