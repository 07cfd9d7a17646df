"""SqlAlchemyApprovalRepository: tool calls waiting for a human's decision."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Row,
    Select,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)

from agent_runtime.domain.approval import (
    Approval,
    ApprovalGrant,
    ApprovalRule,
    ApprovalStatus,
    RuleAction,
)
from agent_runtime.infrastructure.db.guarded_session import Database
from agent_runtime.infrastructure.db.rows import row
from agent_runtime.infrastructure.db.sqlite_hot_statements import hot
from agent_runtime.infrastructure.db.tables import (
    approval_grants,
    approvals,
)

_INSERT_APPROVAL = hot(insert(approvals))
_GET_APPROVAL = hot(
    select(approvals).where(
        approvals.c.tenant_id == bindparam("key_tenant"),
        approvals.c.session_id == bindparam("key_session"),
        approvals.c.call_id == bindparam("key_call"),
    )
)
_GRANTS_IN_FORCE = hot(
    select(approval_grants)
    .where(
        approval_grants.c.tenant_id == bindparam("key_tenant"),
        approval_grants.c.session_id == bindparam("key_session"),
        approval_grants.c.revoked_at.is_(None),
    )
    .order_by(approval_grants.c.granted_at, approval_grants.c.grant_id)
)
_UPDATE_APPROVAL = hot(
    update(approvals).where(  # SET: the columns given
        approvals.c.tenant_id == bindparam("key_tenant"),
        approvals.c.approval_id == bindparam("key_approval"),
    )
)


class SqlAlchemyApprovalRepository:
    def __init__(self, db: Database, tenant_id: str) -> None:
        self._db = db
        self._tenant = tenant_id

    async def add(self, approval: Approval) -> None:
        await self._db.execute(
            _INSERT_APPROVAL,
            {**_approval_values(approval), **row(approvals, tenant_id=self._tenant)},
        )

    async def get(self, session_id: str, call_id: str) -> Approval | None:
        key = {"key_tenant": self._tenant, "key_session": session_id, "key_call": call_id}
        found = (await self._db.execute(_GET_APPROVAL, key)).first()
        return None if found is None else _approval_from_row(found)

    async def save(self, approval: Approval) -> None:
        values = _approval_values(approval)
        key = {"key_tenant": self._tenant, "key_approval": values.pop("approval_id")}
        await self._db.execute(_UPDATE_APPROVAL, {**values, **key})

    async def open_for_session(self, session_id: str) -> list[Approval]:
        rows = (
            await self._db.execute(
                select(approvals).where(
                    *self._session(session_id),
                    approvals.c.status == ApprovalStatus.PENDING.value,
                )
            )
        ).all()
        return [_approval_from_row(found) for found in rows]

    async def pending_page(
        self, session_id: str, now: datetime, after: tuple[datetime, str] | None, limit: int
    ) -> list[Approval]:
        query = select(approvals).where(
            *self._session(session_id),
            approvals.c.status == ApprovalStatus.PENDING.value,
            approvals.c.expires_at > now,
        )
        if after is not None:
            at, key = after
            query = query.where(
                or_(
                    approvals.c.created_at > at,
                    and_(approvals.c.created_at == at, approvals.c.call_id > key),
                )
            )
        query = query.order_by(approvals.c.created_at, approvals.c.call_id).limit(limit)
        return [_approval_from_row(found) for found in (await self._db.execute(query)).all()]

    async def count_pending(self, session_id: str, now: datetime) -> int:
        count = await self._db.scalar(
            count_pending_approvals(now).where(*self._session(session_id))
        )
        return int(count or 0)

    async def count_pending_of(self, session_ids: Sequence[str], now: datetime) -> dict[str, int]:
        counts = dict.fromkeys(session_ids, 0)
        if not counts:
            return counts
        rows = await self._db.execute(
            count_pending_approvals(now)
            .add_columns(approvals.c.session_id)
            .where(approvals.c.tenant_id == self._tenant, approvals.c.session_id.in_(list(counts)))
            .group_by(approvals.c.session_id)
        )
        for count, session_id in rows.all():
            counts[session_id] = int(count)
        return counts

    async def add_grant(self, grant: ApprovalGrant) -> None:
        await self._db.execute(
            insert(approval_grants),
            row(
                approval_grants,
                grant_id=grant.grant_id,
                tenant_id=self._tenant,
                session_id=grant.session_id,
                tool_name=grant.tool_name,
                when_globs=json.dumps([list(pair) for pair in grant.when]),
                call_id=grant.call_id,
                turn_id=grant.turn_id,
                granted_at=grant.granted_at,
                revoked_at=grant.revoked_at,
            ),
        )

    async def grants(self, session_id: str) -> list[ApprovalGrant]:
        key = {"key_tenant": self._tenant, "key_session": session_id}
        rows = (await self._db.execute(_GRANTS_IN_FORCE, key)).all()
        return [_grant_from_row(found) for found in rows]

    async def grants_of(self, session_ids: Sequence[str]) -> dict[str, list[ApprovalGrant]]:
        found: dict[str, list[ApprovalGrant]] = {session_id: [] for session_id in session_ids}
        if not found:
            return found
        rows = await self._db.execute(
            select(approval_grants)
            .where(
                approval_grants.c.tenant_id == self._tenant,
                approval_grants.c.session_id.in_(list(found)),
                approval_grants.c.revoked_at.is_(None),
            )
            .order_by(approval_grants.c.granted_at, approval_grants.c.grant_id)
        )
        for each in rows.all():
            found[each.session_id].append(_grant_from_row(each))
        return found

    async def revoke_grant(self, session_id: str, grant_id: str, at: datetime) -> bool:
        result: CursorResult[Any] = await self._db.execute(
            update(approval_grants)
            .where(
                approval_grants.c.tenant_id == self._tenant,
                approval_grants.c.session_id == session_id,
                approval_grants.c.grant_id == grant_id,
                approval_grants.c.revoked_at.is_(None),
            )
            .values(revoked_at=at)
        )
        return result.rowcount == 1

    def _session(self, session_id: str) -> tuple[ColumnElement[bool], ...]:
        return (approvals.c.tenant_id == self._tenant, approvals.c.session_id == session_id)


def _approval_values(approval: Approval) -> dict[str, Any]:
    return row(
        approvals,
        approval_id=approval.approval_id,
        session_id=approval.session_id,
        call_id=approval.call_id,
        message_id=approval.message_id,
        turn_id=approval.turn_id,
        tool_name=approval.tool_name,
        arguments=json.dumps(approval.arguments),
        final_arguments=(
            None if approval.final_arguments is None else json.dumps(approval.final_arguments)
        ),
        reason=approval.reason,
        status=approval.status.value,
        feedback=approval.feedback,
        created_at=approval.created_at,
        expires_at=approval.expires_at,
        decided_at=approval.decided_at,
        rule=None if approval.rule is None else rule_to_json(approval.rule),
        rule_index=approval.rule_index,
    )


def _approval_from_row(found: Row[Any]) -> Approval:
    return Approval(
        approval_id=found.approval_id,
        session_id=found.session_id,
        call_id=found.call_id,
        message_id=found.message_id,
        turn_id=found.turn_id,
        tool_name=found.tool_name,
        arguments=json.loads(found.arguments),
        reason=found.reason,
        created_at=found.created_at,
        expires_at=found.expires_at,
        status=ApprovalStatus(found.status),
        final_arguments=None
        if found.final_arguments is None
        else json.loads(found.final_arguments),
        feedback=found.feedback,
        decided_at=found.decided_at,
        rule=None if found.rule is None else rule_from_json(found.rule),
        rule_index=found.rule_index,
    )


def rule_to_json(rule: ApprovalRule) -> str:
    return json.dumps(
        {"tool": rule.tool, "when": [list(pair) for pair in rule.when], "action": rule.action.value}
    )


def rule_from_json(text: str) -> ApprovalRule:
    data = json.loads(text)
    return ApprovalRule(
        data["tool"], RuleAction(data["action"]), tuple((n, g) for n, g in data["when"])
    )


def count_pending_approvals(now: datetime) -> Select[int]:
    """Approvals still waiting for a decision at `now`; narrow it with .where()."""
    return (
        select(func.count())
        .select_from(approvals)
        .where(
            approvals.c.status == ApprovalStatus.PENDING.value,
            approvals.c.expires_at > now,
        )
    )


def _grant_from_row(found: Any) -> ApprovalGrant:
    return ApprovalGrant(
        found.grant_id,
        found.session_id,
        found.tool_name,
        tuple((name, glob) for name, glob in json.loads(found.when_globs)),
        found.granted_at,
        found.turn_id,
        found.call_id,
        found.revoked_at,
    )
