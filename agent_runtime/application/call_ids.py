"""CallIds: the id a tool call the model asks for goes by.

Clients answer a call by its id, so ids are unique in a session and a client can send them
back. A call keeps the model's id when it is such an id; else it gets one of ours. Some
servers count from call_0 in every response, so a reused id is the rule with them.
"""

from __future__ import annotations

from agent_runtime.application.ids import IdFactory
from agent_runtime.application.repositories import MessageRepository
from agent_runtime.application.store_ports import UnitOfWorkFactory
from agent_runtime.domain.model import is_valid_id


class CallIds:
    def __init__(self, uows: UnitOfWorkFactory, ids: IdFactory) -> None:
        self._uows = uows
        self._ids = ids

    async def unique(self, messages: MessageRepository, session_id: str, call_id: str) -> str:
        """`call_id` if a client can send it back (1-128 characters, no control characters)
        and the session has no call of that id yet; else a new id of ours."""
        if is_valid_id(call_id) and await messages.find_tool_call(session_id, call_id) is None:
            return call_id
        return self._ids("call")

    async def for_streamed_call(self, tenant_id: str, session_id: str, call_id: str) -> str:
        """The id of a call whose arguments start streaming now, decided at its first fragment
        so that its ToolCallDelta chunks and its ToolCall carry the same one. A read of its
        own, with no lock: no transaction of the turn is open while the model streams, and
        all the turn recorded before this model call (a refused call too) is committed."""
        async with self._uows.reader(tenant_id) as uow:
            return await self.unique(uow.messages, session_id, call_id)
