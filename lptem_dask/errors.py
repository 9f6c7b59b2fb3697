"""Exceptions and warnings of lptem-dask.

Every error raised for bad input is an :class:`LptemError` whose message says
what was expected, what was given, and how to fix it. The command-line tool
prints the message on one line and exits with status 2.
"""

from __future__ import annotations

import errno

#: errno values of a full disk, a file-size or quota limit, or a read-only or
#: forbidden output: the environment, not a bug (reported in one line, exit 2)
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES})

__all__ = [
    "LptemError",
    "InputError",
    "FormatError",
    "ConfigError",
    "OutputExistsError",
    "StoreError",
    "LockedError",
    "ModelError",
    "ClusterError",
    "MissingDependencyError",
    "LptemWarning",
]


class LptemError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(LptemError, ValueError):
    """A parameter or an array given to a function is not acceptable."""


class FormatError(LptemError):
    """A file cannot be read: missing, empty, truncated, corrupt or unsupported."""


class ConfigError(LptemError, ValueError):
    """A configuration file or mapping has an unknown key or a wrong value."""


class OutputExistsError(LptemError):
    """An output path exists and ``overwrite`` was not requested."""


class StoreError(LptemError):
    """A processed-video store is missing, incomplete or inconsistent."""


class LockedError(StoreError):
    """Another run holds the lock of an output store."""


class ModelError(LptemError):
    """A model checkpoint cannot be loaded or does not fit the request."""


class ClusterError(LptemError):
    """A Dask cluster cannot be started or reached."""


class MissingDependencyError(LptemError, ImportError):
    """An optional dependency is not installed; the message gives the install command."""


class LptemWarning(UserWarning):
    """Warnings of this package (treated as errors in its own test-suite)."""


def require(module: str, extra: str, purpose: str):
    """Import an optional dependency or raise :class:`MissingDependencyError`.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"dask_jobqueue"``.
    extra : str
        The ``lptem-dask`` extra that installs it, e.g. ``"cluster"``.
    purpose : str
        What the module is needed for, used in the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency `{module}`, which is not installed "
            f"({exc}); install it with: pip install 'lptem-dask[{extra}]'"
        ) from exc
