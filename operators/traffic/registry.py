"""Every traffic provider, keyed by its field under `spec.traffic`: one line per provider.

The Rollout's `traffic` model is built from this list (`operators.api.rollout`),
so a provider registered here is part of the CRD, the validation and the
release loop with no other change.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from operators.traffic.base import TrafficProvider
from operators.traffic.gateway_api import GatewayAPIProvider
from operators.traffic.istio import IstioProvider

PROVIDERS: Mapping[str, TrafficProvider] = MappingProxyType(
    {provider.field: provider for provider in (GatewayAPIProvider(), IstioProvider())}
)
