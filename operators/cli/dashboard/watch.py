"""Watches Sluice's kinds with the user's kubeconfig and hands every change to a callback.

The kubernetes client is synchronous: one daemon thread per kind lists, then watches from the
list's resourceVersion, and lists again when the watch ends or its version has expired (410).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from operators.api.base import GROUP, VERSION
from operators.cli.dashboard.model import KINDS

log = logging.getLogger(__name__)
WATCH_SECONDS = 60  # the server ends a watch after this; we start the next at once
RETRY_SECONDS = 3.0  # after an error (unreachable, forbidden): try again, and say why meanwhile

# (kind, event type ADDED|MODIFIED|DELETED|SYNCED, the object) or (kind, "ERROR", {"message": ...});
# SYNCED carries the list of all objects of the kind, sent after each (re)list.
Callback = Callable[[str, str, Any], None]


class Watchers:
    def __init__(self, api: k8s.ApiClient, callback: Callback) -> None:
        self.custom = k8s.CustomObjectsApi(api)
        self.callback = callback
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(kind, plural), name=f"watch-{plural}", daemon=True)
            for kind, plural, _ in KINDS
        ]

    def start(self) -> Watchers:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()

    def _run(self, kind: str, plural: str) -> None:
        while not self.stopping.is_set():
            try:
                self._list_and_watch(kind, plural)
            except Exception as error:  # any failure: report it, then list again
                message = error.reason if isinstance(error, ApiException) else str(error)
                status = getattr(error, "status", None)
                log.warning("watching %s: %s", plural, message)
                self.callback(kind, "ERROR", {"message": f"cannot watch {plural}: {status or ''} {message}"})
                self.stopping.wait(RETRY_SECONDS)

    def _list_and_watch(self, kind: str, plural: str) -> None:
        listed = cast(
            "dict[str, Any]",
            self.custom.list_cluster_custom_object(GROUP, VERSION, plural, _request_timeout=30),
        )
        items = [{**item, "kind": kind} for item in listed.get("items") or []]
        self.callback(kind, "SYNCED", items)
        version = (listed.get("metadata") or {}).get("resourceVersion")
        while not self.stopping.is_set():
            stream = k8s_watch.Watch().stream(
                self.custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                plural,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=WATCH_SECONDS + 10,
            )
            for event in stream:
                obj = event["object"]
                if event["type"] == "ERROR":  # e.g. 410 Gone: the version expired; list again
                    return
                version = (obj.get("metadata") or {}).get("resourceVersion") or version
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self.callback(kind, event["type"], {**obj, "kind": kind})
                if self.stopping.is_set():
                    return
