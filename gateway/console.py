"""The read-only web console at ``/ui``, and the recent changes it shows.

An operator wants to look at a gateway without composing ``curl | jq``: which
servers it serves and at which version, which are stale or rejected and why
(file, tool and JSON path, as ``mcpgw validate`` says it), which tools each
endpoint lists, and how each cluster's instances fare. The page is plain
HTML with one small script (no framework, nothing fetched from elsewhere)
that polls ``/admin/state`` and ``/admin/changes`` every two seconds and draws
with ``textContent`` only, so a name or an error message from the config
source can never become markup. It changes nothing: there is no form and no
write endpoint behind it.

``RecentChanges`` keeps the last ``RECENT_CHANGES`` state swaps, told by the
state store, as small records (time, state version, the servers touched with
their phase and error afterwards, the endpoints whose listing changed): a
bounded ring, so a gateway that reloads all day holds the same memory.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from importlib.resources import files
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mcpgw.registry.state import AGGREGATE, StateChange, StateStore

RECENT_CHANGES: Final = 100
"""State swaps the console's "recent changes" keeps (oldest dropped first)."""

_ASSETS: Final = {"": ("index.html", "text/html; charset=utf-8"),
                  "console.js": ("console.js", "text/javascript; charset=utf-8"),
                  "console.css": ("console.css", "text/css; charset=utf-8"),
                  "favicon.svg": ("favicon.svg", "image/svg+xml")}

_HEADERS: Final = {
    # Everything the page needs comes from this gateway; nothing may frame it or run inline script.
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class RecentChanges:
    """The last ``limit`` state swaps, newest first when read."""

    def __init__(self, store: StateStore, limit: int = RECENT_CHANGES, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._changes: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock = threading.Lock()

    def follow(self) -> Callable[[], None]:
        """Record every swap from now on; returns the unsubscribe."""
        return self._store.subscribe(self._record)

    def _record(self, change: StateChange) -> None:
        statuses = self._store.current.statuses
        servers: list[dict[str, Any]] = []
        for server_id in sorted(change.servers):
            status = statuses.get(server_id)
            if status is None:
                servers.append({"server_id": server_id, "name": None, "phase": "removed", "error": None})
                continue
            error = status.last_error if status.phase in ("stale", "error") else None
            servers.append({"server_id": server_id, "name": status.name or None, "phase": status.phase,
                            "version": status.applied_version, "error": dict(error) if error else None})
        endpoints = sorted("/mcp" if key == AGGREGATE else f"/mcp/{key}" for key in change.endpoints)
        record = {"at": self._clock(), "version": change.version, "servers": servers, "endpoints": endpoints,
                  "clusters": len(change.clusters) + len(change.removed_clusters)}
        with self._lock:
            self._changes.append(record)

    def recent(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(reversed(self._changes))


class Console:
    """The ``/ui`` pages and the ``/admin/changes`` document."""

    def __init__(self, changes: RecentChanges) -> None:
        self._changes = changes
        assets = files("mcpgw.gateway") / "console"
        self._assets = {path: (assets.joinpath(name).read_bytes(), media) for path, (name, media) in _ASSETS.items()}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/ui", self.page),
            Route("/ui/", self.page),
            Route("/ui/{asset:str}", self.page),
            Route("/admin/changes", self.changes),
        ]

    async def page(self, request: Request) -> Response:
        found = self._assets.get(request.path_params.get("asset", ""))
        if found is None:
            return Response("Not Found", status_code=404, media_type="text/plain")
        body, media = found
        return Response(body, media_type=media, headers=_HEADERS)

    async def changes(self, request: Request) -> Response:
        return JSONResponse({"changes": self._changes.recent()})
