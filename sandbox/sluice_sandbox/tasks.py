"""Small asyncio helpers shared by the sandbox's in-process controllers (the simulators)."""

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a controller's task and wait until it has ended (its cancellation is no error)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
