"""Reloading the served artifact without stopping the server (what SIGHUP does).

A reload loads the artifact directory again, as at startup (manifest, checksums,
signature, every session), in a thread of its own while the old model keeps
serving, then swaps it in (`ServedModel.replace`). Requests already received finish
on the model they began with. If the new artifact cannot be loaded, or has other
inputs or outputs, the error is logged and the old model keeps serving.

The zero-downtime redeploy this makes (docs/protocol.md): export to a new
directory, point a symlink the server was started on at it atomically, send SIGHUP.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from budget_edge.errors import BudgetEdgeError
from budget_edge.runtime.runtime import BudgetRuntime
from budget_edge.serve.model import ServedModel

# uvicorn's logger, so that reloads show in the server's log with its format.
logger = logging.getLogger("uvicorn.error")


class Reloader:
    """Reloads `model` with `load` (a function returning a fresh runtime) on request."""

    def __init__(self, model: ServedModel, load: Callable[[], BudgetRuntime]) -> None:
        self.model = model
        self.load = load
        self._state = threading.Lock()
        self._running = False
        self._again = False  # a request came while a reload ran

    def request(self) -> None:
        """Reload in a background thread, and return at once. A request that comes while
        a reload runs makes one more reload after it, so the last switch of a symlink is
        always picked up. (Called on the event loop, not in a signal handler proper.)"""
        with self._state:
            if self._running:
                self._again = True
                return
            self._running = True
        threading.Thread(target=self._reload_until_done, name="reload", daemon=True).start()

    def _reload_until_done(self) -> None:
        again = True
        while again:
            self.reload()
            with self._state:
                again, self._again = self._again, False
                self._running = again

    def reload(self) -> bool:
        """Load and swap in the artifact now; False (and a log line) if that failed, the
        old model still serving."""
        logger.info("SIGHUP: reloading the artifact; the loaded model serves meanwhile")
        try:
            runtime = self.load()
        except BudgetEdgeError as exc:
            logger.error("reload failed, still serving the model loaded before: %s", exc)
            return False
        except Exception:  # a bug: say so, and keep serving
            logger.exception("reload failed, still serving the model loaded before")
            return False
        try:
            self.model.replace(runtime)
        except Exception as exc:
            runtime.close()
            if not isinstance(exc, BudgetEdgeError):
                logger.exception("reload failed, still serving the model loaded before")
                return False
            logger.error("reload refused, still serving the model loaded before: %s", exc)
            return False
        logger.info("reloaded: now serving %s", runtime.directory.resolve())
        return True
