"""Tenant quotas from the API keys file (AGENT_RUNTIME_API_KEYS_FILE), beside its key lines:

    k-7f3a9c0e=team-infra
    quota team-infra tokens_per_day=2000000 concurrent_turns=4 requests_per_minute=120

A quota line is `quota`, the tenant, then one or more `name=value` limits (whole numbers,
1 or more): tokens_per_day, concurrent_turns, requests_per_minute. A limit left out is no
limit. Key lines never start with `quota` and a space (a key has no spaces), so files without
quota lines read as before: parse_api_keys_file skips the lines is_quota_line accepts, and
parse_tenant_quotas reads only those. Error messages name the setting and the line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from agent_runtime.domain.quotas import TenantQuota
from agent_runtime.domain.tenants import is_valid_tenant_id

QUOTA_KEYWORD = "quota"
LIMITS = ("tokens_per_day", "concurrent_turns", "requests_per_minute")


class QuotaConfigError(ValueError):
    """A quota line the server cannot accept (the message names the setting and the line)."""


def is_quota_line(line: str) -> bool:
    words = line.split(None, 1)
    return len(words) == 2 and words[0] == QUOTA_KEYWORD


def parse_tenant_quotas(text: str, setting: str) -> dict[str, TenantQuota]:
    """The quota lines of an API keys file: {tenant: TenantQuota}."""
    quotas: dict[str, TenantQuota] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not is_quota_line(line.strip()):
            continue
        where = f"{setting}, line {number}"
        _, tenant, *limits = line.split()
        if not is_valid_tenant_id(tenant):
            raise QuotaConfigError(
                f"{where}: expected `quota <tenant> name=value...`; {tenant!r} is not a tenant id"
            )
        if tenant in quotas:
            raise QuotaConfigError(f"{where}: tenant {tenant!r} already has a quota line")
        if not limits:
            raise QuotaConfigError(f"{where}: no limit given (known: {', '.join(LIMITS)})")
        quota = TenantQuota()
        for limit in limits:
            name, equals, raw = limit.partition("=")
            if not equals or name not in LIMITS:
                raise QuotaConfigError(
                    f"{where}: {limit!r} is not name=value with a name among {', '.join(LIMITS)}"
                )
            if getattr(quota, name) is not None:
                raise QuotaConfigError(f"{where}: {name} is given twice")
            value = _whole_number(raw)
            if value is None or value < 1:
                raise QuotaConfigError(f"{where}: {name} must be a whole number, 1 or more")
            quota = replace(quota, **{name: value})
        quotas[tenant] = quota
    return quotas


def _whole_number(raw: str) -> int | None:
    """`raw` as a number written in the digits 0-9; None for anything else (str.isdigit
    accepts "²", which int() refuses) or for more digits than int() reads."""
    if not (raw.isascii() and raw.isdecimal()):
        return None
    try:
        return int(raw)
    except ValueError:  # over sys.get_int_max_str_digits()
        return None


def check_quota_tenants(quotas: Mapping[str, TenantQuota], api_keys: Mapping[str, str]) -> None:
    """A quota for a tenant no key acts for is a typo: refuse it."""
    unknown = sorted(set(quotas) - set(api_keys.values()))
    if unknown:
        raise QuotaConfigError(f"quota lines for tenants no API key acts for: {', '.join(unknown)}")
