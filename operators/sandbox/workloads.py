"""
The workload simulator: plays the Deployment controller and the kubelet for the sandbox.

``ready_delay`` seconds after a Deployment's spec changes (a new ``metadata.generation``), it
writes the status that a real cluster reports once the new pods are ready. A Deployment whose
pod template is annotated ``sandbox.sluice.dev/ready: "false"`` never gets ready pods: its status
shows the replicas, but none ready or available — for testing progress deadlines.

Pods are not simulated yet. The seam for them is :func:`ready_replicas`: once a pod simulator
exists, it should count the ready pods of the Deployment's selector instead of reading
the annotation, and :class:`WorkloadSimulator` should also react to pod events.
"""
import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from operators.sandbox.store import ApiError, JsonObject, Store, now

logger = logging.getLogger(__name__)

DEPLOYMENTS = 'apps/v1/deployments'
READY_ANNOTATION = 'sandbox.sluice.dev/ready'


def desired_replicas(deployment: Mapping[str, Any]) -> int:
    replicas = deployment.get('spec', {}).get('replicas')
    return 1 if replicas is None else int(replicas)  # the API server's default


def ready_replicas(deployment: Mapping[str, Any]) -> int:
    """How many of the Deployment's pods are ready (the seam for a future pod simulator)."""
    template_meta = deployment.get('spec', {}).get('template', {}).get('metadata') or {}
    never_ready = (template_meta.get('annotations') or {}).get(READY_ANNOTATION) == 'false'
    return 0 if never_ready else desired_replicas(deployment)


def replica_set_name(deployment: Mapping[str, Any]) -> str:
    """Like the controller's ``NAME-<pod-template-hash>``: stable for the same pod template."""
    template = json.dumps(deployment.get('spec', {}).get('template', {}), sort_keys=True)
    return f"{deployment['metadata']['name']}-{hashlib.sha256(template.encode()).hexdigest()[:10]}"


def deployment_status(deployment: Mapping[str, Any], *, timestamp: str | None = None) -> JsonObject:
    """
    The status of a Deployment once its current generation is rolled out as far as it can go:
    all replicas updated, and as many ready & available as :func:`ready_replicas` says.
    """
    timestamp = timestamp or now()
    replicas = desired_replicas(deployment)
    ready = ready_replicas(deployment)
    complete = ready >= replicas
    replica_set = replica_set_name(deployment)
    status: JsonObject = {
        'observedGeneration': deployment['metadata'].get('generation', 1),
        'replicas': replicas,
        'updatedReplicas': replicas,
        'readyReplicas': ready,
        'availableReplicas': ready,
    }
    if not complete:
        status['unavailableReplicas'] = replicas - ready
    previous = {cond.get('type'): cond for cond in deployment.get('status', {}).get('conditions', [])}
    status['conditions'] = [
        _condition(previous, 'Available', complete, timestamp,
                   'MinimumReplicasAvailable' if complete else 'MinimumReplicasUnavailable',
                   'Deployment has minimum availability.' if complete else
                   'Deployment does not have minimum availability.'),
        _condition(previous, 'Progressing', True, timestamp,
                   'NewReplicaSetAvailable' if complete else 'ReplicaSetUpdated',
                   f'ReplicaSet "{replica_set}" has successfully progressed.' if complete else
                   f'ReplicaSet "{replica_set}" is progressing.'),
    ]
    return status


def _condition(previous: Mapping[str, Any], kind: str, value: bool, timestamp: str,
               reason: str, message: str) -> JsonObject:
    status = 'True' if value else 'False'
    old = previous.get(kind) or {}
    # As in Kubernetes: the transition time moves only when the condition's status flips.
    transition = old.get('lastTransitionTime') if old.get('status') == status else None
    return {'type': kind, 'status': status, 'lastUpdateTime': timestamp,
            'lastTransitionTime': transition or timestamp, 'reason': reason, 'message': message}


def needs_status(deployment: Mapping[str, Any]) -> bool:
    observed = deployment.get('status', {}).get('observedGeneration')
    return bool(observed != deployment['metadata'].get('generation'))


class WorkloadSimulator:
    """Watches Deployments in the store and settles their status ``ready_delay`` after changes."""

    def __init__(self, store: Store, ready_delay: float = 0.2) -> None:
        self._store = store
        self._ready_delay = ready_delay
        self._task: asyncio.Task[None] | None = None
        self._timers: dict[tuple[str, str], tuple[int, asyncio.Task[None]]] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name='sandbox-workload-simulator')

    async def stop(self) -> None:
        tasks = [task for _, task in self._timers.values()] + ([self._task] if self._task else [])
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._timers.clear()
        self._task = None

    async def run(self) -> None:
        """Simulate until cancelled; a failure restarts the watch rather than ending the simulation."""
        while True:
            try:
                async with self._store.watch(DEPLOYMENTS) as events:
                    async for event in events:
                        self._observe(event['type'], event['object'])
                return  # the store is closed: the server is stopping
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception('The workload simulator failed; restarting it.')
                await asyncio.sleep(self._ready_delay)

    def _observe(self, event_type: str, deployment: JsonObject) -> None:
        meta = deployment['metadata']
        key = (meta['namespace'], meta['name'])
        generation = meta.get('generation', 1)
        scheduled_generation, timer = self._timers.get(key, (None, None))
        if event_type == 'DELETED' or (timer is not None and scheduled_generation != generation):
            if timer is not None:
                timer.cancel()
            self._timers.pop(key, None)
        if event_type != 'DELETED' and needs_status(deployment) and key not in self._timers:
            task = asyncio.create_task(self._settle(key, generation))
            self._timers[key] = (generation, task)

    async def _settle(self, key: tuple[str, str], generation: int) -> None:
        await asyncio.sleep(self._ready_delay)
        namespace, name = key
        try:
            while True:
                current = await self._store.get(DEPLOYMENTS, namespace, name)
                if current['metadata'].get('generation') != generation:
                    return  # a newer generation has its own timer
                current['status'] = deployment_status(current)
                try:
                    # A replace of the whole status (not a merge): stale fields must go away.
                    await self._store.replace(DEPLOYMENTS, namespace, name, current, subresource='status')
                    return
                except ApiError as e:
                    if e.status != 409:
                        raise
                    # Someone wrote in between: re-read and retry with the fresh state.
        except ApiError as e:
            if e.status != 404:
                raise
        finally:
            if self._timers.get(key, (None, None))[0] == generation:
                del self._timers[key]
