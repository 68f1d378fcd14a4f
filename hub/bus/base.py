"""The bus interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

#: Called for each message from a subscribed channel: (channel, data).
MessageHandler = Callable[[str, bytes], None]
#: Called when a dead instance's agents are found offline:
#: (project_id, agent_ids that now have no session anywhere).
OfflineHandler = Callable[[str, list[str]], Awaitable[None]]


class SessionLimit(Exception):
    """``presence_join`` refused: the agent already holds its cap of
    sessions (on every instance together)."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the agent already holds {cap} sessions")
        self.cap = cap


class Bus(ABC):
    """Channels carry opaque bytes. Presence counts sessions per agent.

    ``presence_join``/``presence_leave`` return True exactly when the agent's
    first session opens / last session closes, across every instance that
    shares the bus, so one instance (and only one) announces the change.
    """

    instance_id: str
    #: False when no other instance can be listening (the memory bus): the
    #: relay then delivers to this instance's listeners and publishes nothing.
    shared: bool = True

    def __init__(self) -> None:
        self._on_message: MessageHandler = lambda channel, data: None
        self._on_offline: OfflineHandler | None = None

    def set_handlers(self, on_message: MessageHandler, on_offline: OfflineHandler) -> None:
        self._on_message = on_message
        self._on_offline = on_offline

    @abstractmethod
    async def connect(self) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def publish(self, channel: str, data: bytes) -> None: ...

    @abstractmethod
    async def subscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    async def presence_join(
        self, project_id: str, agent_id: str, session_id: str, max_sessions: int = 0
    ) -> bool:
        """Count a session; :class:`SessionLimit` (nothing counted) when the
        agent already holds ``max_sessions`` (0: no cap)."""

    @abstractmethod
    async def presence_leave(self, project_id: str, agent_id: str, session_id: str) -> bool: ...

    @abstractmethod
    async def online_agents(self, project_id: str) -> set[str]: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    async def instance_alive(self, instance_id: str) -> bool:
        """Whether the instance ``instance_id`` still runs. With a bus no
        other instance shares, only this one does."""
        return instance_id == self.instance_id
