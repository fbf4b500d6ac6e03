"""The dashboard's state on the server: the objects as last watched, what was seen of each Rollout,
and the browsers listening (Server-Sent Events), each told of every change."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from operators.cli.dashboard.model import Seen, id_of, rollout_detail, summary
from operators.foundation.clock import format_time

QUEUE_SIZE = 1000  # events a browser may be behind; past that it gets a fresh snapshot instead


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def sse(event: str, data: Any) -> str:
    """One Server-Sent Event (data on one line: JSON never contains a raw newline)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class Hub:
    def __init__(self) -> None:
        self.started = utc_now()
        self.objects: dict[str, dict[str, Any]] = {}
        self.seen: dict[str, Seen] = {}
        self.errors: dict[str, str] = {}  # by kind: why it cannot be watched right now
        self.listeners: set[asyncio.Queue[str]] = set()

    def view(self, body: dict[str, Any]) -> dict[str, Any]:
        key = id_of(body)
        if body.get("kind") == "Rollout":
            return rollout_detail(body, self.seen.setdefault(key, Seen()), self.started)
        return summary(body)

    def snapshot(self) -> dict[str, Any]:
        return {
            "objects": [self.view(body) for body in self.objects.values()],
            "errors": self.errors,
            "watchingSince": self.started,
        }

    def changed(self, kind: str, event: str, payload: Any) -> None:
        """A watch event (operators/cli/dashboard/watch.py), on the event loop."""
        if event == "ERROR":
            self.errors[kind] = str(payload.get("message"))
            self._tell("snapshot", self.snapshot())
            return
        if event == "SYNCED":
            self.errors.pop(kind, None)
            for key in [k for k, body in self.objects.items() if body.get("kind") == kind]:
                del self.objects[key]
            for body in payload:
                self._store(body)
            self._tell("snapshot", self.snapshot())
            return
        key = id_of(payload)
        if event == "DELETED":
            self.objects.pop(key, None)
            self.seen.pop(key, None)
            self._tell("deleted", {"id": key})
            return
        self._store(payload)
        self._tell("object", self.view(payload))

    def _store(self, body: dict[str, Any]) -> None:
        key = id_of(body)
        self.objects[key] = body
        if body.get("kind") == "Rollout":
            self.seen.setdefault(key, Seen()).observe(body, utc_now())

    def listen(self) -> asyncio.Queue[str]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        queue.put_nowait(sse("snapshot", self.snapshot()))
        self.listeners.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[str]) -> None:
        self.listeners.discard(queue)

    def _tell(self, event: str, data: Any) -> None:
        message = sse(event, data)
        for queue in list(self.listeners):
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                # A browser this far behind needs the whole picture, not the backlog.
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(sse("snapshot", self.snapshot()))
