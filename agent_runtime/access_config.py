"""Who may call the server, and on which addresses: API keys and the development-mode rule.

Keys come from AGENT_RUNTIME_API_KEYS (`key1=tenant-a,key2=tenant-b`) and/or the file named
by AGENT_RUNTIME_API_KEYS_FILE (one `key=tenant` per line; blank lines and lines starting
with `#` are ignored). A key is everything before the last `=`, so base64 padding is fine.
Error messages name the setting and the entry's position, never the key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from agent_runtime.domain.tenants import is_valid_tenant_id
from agent_runtime.quota_config import is_quota_line

LOOPBACK_NAMES = frozenset({"localhost"})


class AccessConfigError(ValueError):
    """An API key entry or listen address the server cannot accept (message names where)."""


def parse_api_keys(raw: str, setting: str) -> dict[str, str]:
    """`key1=tenant-a,key2=tenant-b` -> {key: tenant}."""
    entries = [(f"entry {n}", part) for n, part in enumerate(raw.split(","), 1) if part.strip()]
    return _collect(entries, setting)


def parse_api_keys_file(text: str, setting: str) -> dict[str, str]:
    """One `key=tenant` per line; `#` starts a comment line; blank lines are skipped, and so
    are quota lines (quota_config.py reads those)."""
    entries = [
        (f"line {n}", line)
        for n, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#") and not is_quota_line(line.strip())
    ]
    return _collect(entries, setting)


def merge_api_keys(*sources: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in sources:
        for key, tenant in source.items():
            if merged.get(key, tenant) != tenant:
                raise AccessConfigError(
                    "AGENT_RUNTIME_API_KEYS and AGENT_RUNTIME_API_KEYS_FILE give the same key to "
                    f"two tenants ({merged[key]!r} and {tenant!r}); each key belongs to one tenant"
                )
            merged[key] = tenant
    return merged


def _collect(entries: Iterable[tuple[str, str]], setting: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for where, entry in entries:
        key, equals, tenant = entry.strip().rpartition("=")
        key, tenant = key.strip(), tenant.strip()
        if not equals or not key:
            raise AccessConfigError(f"{setting}, {where}: expected key=tenant")
        if not key.isprintable() or any(c.isspace() for c in key) or not key.isascii():
            raise AccessConfigError(
                f"{setting}, {where}: the key must be printable ASCII without spaces "
                "(it travels in a request header)"
            )
        if not is_valid_tenant_id(tenant):
            raise AccessConfigError(
                f"{setting}, {where}: tenant {tenant!r} must be 1-64 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        if keys.get(key, tenant) != tenant:
            raise AccessConfigError(
                f"{setting}, {where}: this key is already given for tenant {keys[key]!r}; "
                "each key belongs to one tenant"
            )
        keys[key] = tenant
    if not keys:
        # Asked for keys but got none (an unpopulated secret mount, say): refusing to start
        # beats falling back to development mode, where nothing is authenticated.
        raise AccessConfigError(f"{setting} is set but holds no key=tenant entry")
    return keys


def listen_host(listen: str) -> str:
    """The host part of `host:port`, without IPv6 brackets ("" for `:port`)."""
    host = listen.rsplit(":", 1)[0] if ":" in listen else listen
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(listen: str) -> bool:
    """Reachable from this machine only: 127.0.0.0/8, ::1, localhost (or a unix socket)."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    host = listen_host(listen)
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "", 0.0.0.0-like wildcards are addresses; other names may be anything
