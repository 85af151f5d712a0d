"""TensorFlow kept quiet: its C++ start-up lines (CUDA probing, CPU features) and retracing warnings stay off
stderr unless asked for. Used by the ``mltrade`` command and by every process it starts (search workers),
which inherit ``MLTRADE_VERBOSE`` from it."""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import sys
from typing import Iterator

#: set to "1" by ``mltrade -v``; spawned workers read it
VERBOSE_ENV = "MLTRADE_VERBOSE"


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Send file descriptor 2 to the null device (C++ code writes there, below Python's ``sys.stderr``)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no real stderr (embedded, closed): nothing to hide
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's import and device probing with fd 2 silenced, then hands the module back."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _stderr_fd_silenced():
            self._loader.exec_module(module)
            try:   # CUDA probing (a "failed call to cuInit" line on CPU-only machines) happens here, silently
                module.config.list_physical_devices("GPU")
            except Exception:  # pragma: no cover - probing is best effort; real errors surface on first use
                pass


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """On the first ``import tensorflow``, wraps its loader in :class:`_QuietLoader` (then steps aside)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool = False) -> None:
    """Keep TensorFlow's start-up lines and retracing warnings off stderr (everything shows with ``verbose``).

    C++ start-up lines (CUDA probing, CPU features) are written before TensorFlow reads
    ``TF_CPP_MIN_LOG_LEVEL``, so its import runs with file descriptor 2 silenced; the Python
    ``tensorflow`` logger drops retracing warnings and ``absl`` shows errors only.
    """
    if verbose:
        return
    tf_log = logging.getLogger("tensorflow")
    if not any(isinstance(f, _RetracingFilter) for f in tf_log.filters):
        tf_log.addFilter(_RetracingFilter())
    logging.getLogger("absl").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def quiet_tensorflow_in_worker() -> None:
    """:func:`quiet_tensorflow` in a process the command started (verbose when the command was)."""
    quiet_tensorflow(verbose=os.environ.get(VERBOSE_ENV) == "1")
