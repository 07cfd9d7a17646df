"""Tenants: who owns a session. API keys map to tenants; without keys, one default tenant."""

from __future__ import annotations

import re

# Development mode's tenant, and the owner of sessions created before tenants existed.
DEFAULT_TENANT = "default"

TENANT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def is_valid_tenant_id(tenant_id: str) -> bool:
    return TENANT_ID_PATTERN.fullmatch(tenant_id) is not None
