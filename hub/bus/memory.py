"""One-process bus: channels and presence in dictionaries."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from hub.bus.base import Bus, SessionLimit


class MemoryBus(Bus):
    shared = False

    def __init__(self, *, instance_id: str) -> None:
        super().__init__()
        self.instance_id = instance_id
        self._channels: set[str] = set()
        self._sessions: dict[tuple[str, str], set[str]] = defaultdict(set)
        # Cached: on Python 3.11 every get_running_loop() is a getpid() system call.
        self._loop: asyncio.AbstractEventLoop | None = None

    async def connect(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def disconnect(self) -> None:
        self._channels.clear()

    async def publish(self, channel: str, data: bytes) -> None:
        if channel in self._channels:
            # Deliver on the next loop turn, as a network bus would: the
            # publisher never runs subscriber code inside its own call.
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._on_message, channel, data)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def presence_join(
        self, project_id: str, agent_id: str, session_id: str, max_sessions: int = 0
    ) -> bool:
        sessions = self._sessions[(project_id, agent_id)]
        if 0 < max_sessions <= len(sessions) and session_id not in sessions:
            raise SessionLimit(max_sessions)
        sessions.add(session_id)
        return len(sessions) == 1

    async def presence_leave(self, project_id: str, agent_id: str, session_id: str) -> bool:
        key = (project_id, agent_id)
        sessions = self._sessions.get(key)
        if not sessions or session_id not in sessions:
            return False
        sessions.discard(session_id)
        if sessions:
            return False
        del self._sessions[key]
        return True

    async def online_agents(self, project_id: str) -> set[str]:
        return {
            agent for (project, agent), s in self._sessions.items() if project == project_id and s
        }

    async def ping(self) -> bool:
        return True
