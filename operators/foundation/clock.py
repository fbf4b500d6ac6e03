"""The time: now, and timestamps as Kubernetes writes them (RFC 3339, UTC, second precision or finer)."""

from __future__ import annotations

from datetime import UTC, datetime


def format_time(moment: datetime) -> str:
    """``2026-01-02T03:04:05Z``; sub-second precision kept when present (timers run at 1s)."""
    moment = moment.astimezone(UTC)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """Inverse of :func:`format_time`; accepts any ISO 8601 form with a zone."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def seconds_since(text: str | None, now: datetime) -> float:
    """Seconds from a stored timestamp to ``now``; 0 when there is none."""
    if not text:
        return 0.0
    return (now - parse_time(text)).total_seconds()


def utc_now() -> datetime:
    """The shells' clock; tests pass their own."""
    return datetime.now(tz=UTC)
