"""Routes beyond weights: header routes and mirror routes, as every traffic provider is given them.

A header route sends the requests that match it to the canary only (all others keep the
weights); a mirror route sends a copy of a share of the matching requests (all requests without
matches) to the canary, whose answers are discarded. Both are named, so that a later step can
replace or remove one. Matches have the shape of the Gateway API's HTTPRouteMatch (headers,
query parameters, path, method): the most widely known shape, which each provider maps to its
own (the Gateway API provider copies it; others translate it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from operators.foundation.model import ApiModel

# A route's name goes into the names of the rules a provider writes (e.g. `sluice-header-<name>`):
# a DNS-1123 label keeps every such name valid.
ROUTE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ROUTE_NAME_MAX = 40
# What an HTTP header or query parameter name may be (RFC 7230 token), as the Gateway API says.
TOKEN_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$"
MAX_MATCHES = 8


class HeaderMatch(ApiModel):
    """A request header that must be present with this value."""

    type: Literal["Exact", "RegularExpression"] | None = Field(default=None, description="Default Exact.")
    name: str = Field(min_length=1, max_length=256, pattern=TOKEN_PATTERN)
    value: str = Field(min_length=1, max_length=4096)


class QueryParamMatch(ApiModel):
    """A query parameter that must be present with this value."""

    type: Literal["Exact", "RegularExpression"] | None = Field(default=None, description="Default Exact.")
    name: str = Field(min_length=1, max_length=256, pattern=TOKEN_PATTERN)
    value: str = Field(min_length=1, max_length=1024)


class PathMatch(ApiModel):
    """The request's path."""

    type: Literal["Exact", "PathPrefix", "RegularExpression"] | None = Field(
        default=None, description="Default PathPrefix."
    )
    value: str | None = Field(default=None, max_length=1024, description="Default /.")


class RouteMatch(ApiModel):
    """A Gateway API HTTPRouteMatch: every condition given must hold."""

    model_config = {"json_schema_extra": {"minProperties": 1}}

    path: PathMatch | None = None
    headers: list[HeaderMatch] | None = Field(default=None, min_length=1, max_length=16)
    query_params: list[QueryParamMatch] | None = Field(default=None, min_length=1, max_length=16)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = (
        None
    )

    @model_validator(mode="after")
    def _something_to_match(self) -> RouteMatch:
        if self.path is None and not self.headers and not self.query_params and self.method is None:
            raise ValueError("a match needs at least one of path, headers, queryParams or method")
        return self


class HeaderRoute(ApiModel):
    """Requests that match go to the canary only. Without matches: remove the header route of that name."""

    name: str = Field(min_length=1, max_length=ROUTE_NAME_MAX, pattern=ROUTE_NAME_PATTERN)
    matches: list[RouteMatch] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MATCHES,
        description="Gateway API HTTPRouteMatches (any one matching is enough). Absent: remove the route.",
    )


class MirrorRoute(ApiModel):
    """A copy of `percent` of the matching requests also goes to the canary; its answers are discarded.

    Without percent: remove the mirror route of that name."""

    name: str = Field(min_length=1, max_length=ROUTE_NAME_MAX, pattern=ROUTE_NAME_PATTERN)
    percent: int | None = Field(
        default=None, ge=0, le=100, description="Share of the requests mirrored. Absent: remove the route."
    )
    matches: list[RouteMatch] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_MATCHES,
        description="Gateway API HTTPRouteMatches; absent: every request.",
    )

    @model_validator(mode="after")
    def _matches_need_percent(self) -> MirrorRoute:
        if self.percent is None and self.matches is not None:
            raise ValueError(f"mirror route {self.name!r} has matches but no percent: set percent")
        return self


@dataclass(frozen=True)
class Routes:
    """The header and mirror routes in force, in the order they were set (each name once)."""

    headers: tuple[HeaderRoute, ...] = ()
    mirrors: tuple[MirrorRoute, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.headers or self.mirrors)


NO_ROUTES = Routes()


def with_header_route(active: list[HeaderRoute], step: HeaderRoute) -> list[HeaderRoute]:
    """The header routes after a `setHeaderRoute` step: set (in place, or appended), or removed."""
    kept = [route for route in active if route.name != step.name]
    if step.matches is None:
        return kept
    if any(route.name == step.name for route in active):
        return [step if route.name == step.name else route for route in active]
    return [*kept, step]


def with_mirror_route(active: list[MirrorRoute], step: MirrorRoute) -> list[MirrorRoute]:
    """The mirror routes after a `setMirrorRoute` step: set (in place, or appended), or removed."""
    kept = [route for route in active if route.name != step.name]
    if step.percent is None:
        return kept
    if any(route.name == step.name for route in active):
        return [step if route.name == step.name else route for route in active]
    return [*kept, step]
