"""The README's API reference names every RPC, chunk and error reason the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent_runtime.api.errors import status_code_for
from agent_runtime.api.server import SERVICE_NAMES
from agent_runtime.domain import errors
from agent_runtime.v1 import agent_pb2, agent_runtime_pb2, event_pb2, session_pb2, usage_pb2

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _table_after(heading: str) -> dict[str, list[str]]:
    """The first Markdown table under `heading`: first-column text -> the other cells."""
    start = README.index(f"\n{heading}\n")
    lines: list[str] = []
    for line in README[start:].splitlines()[2:]:
        if line.startswith("|"):
            lines.append(line)
        elif lines:
            break
    rows: dict[str, list[str]] = {}
    for line in lines[2:]:  # past the header and the |---| line
        cells = [cell.strip().strip("`") for cell in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


def _reasons_in_code() -> set[str]:
    pattern = re.compile(r'(?:reason=|default_reason = )"([A-Z_]+)"')
    found: set[str] = set()
    for path in (ROOT / "agent_runtime").rglob("*.py"):
        if "v1" not in path.relative_to(ROOT).parts:
            found.update(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def _domain_error_classes() -> list[type[errors.DomainError]]:
    pending: list[type[errors.DomainError]] = [errors.DomainError]
    seen: list[type[errors.DomainError]] = []
    while pending:
        cls = pending.pop()
        seen.append(cls)
        pending.extend(cls.__subclasses__())
    return seen


def test_every_rpc_is_in_the_rpc_table() -> None:
    documented = _table_after("### RPCs")
    for module in (agent_runtime_pb2, session_pb2, agent_pb2, event_pb2, usage_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.full_name in SERVICE_NAMES
            for method in service.methods:
                assert f"{service.name}/{method.name}" in documented, method.full_name


def test_every_chunk_is_in_the_chunk_table() -> None:
    documented = _table_after("### Chunks")
    oneof = agent_runtime_pb2.StreamChunk.DESCRIPTOR.oneofs_by_name["chunk"]
    assert {field.name for field in oneof.fields} == set(documented)


def test_every_error_reason_is_in_the_reason_table() -> None:
    documented = _table_after("### Error reasons")
    missing = _reasons_in_code() - set(documented)
    assert not missing, f"add these reasons to the README's error table: {sorted(missing)}"


@pytest.mark.parametrize("cls", _domain_error_classes(), ids=lambda cls: cls.__name__)
def test_the_documented_code_of_each_default_reason_is_the_mapped_one(
    cls: type[errors.DomainError],
) -> None:
    documented = _table_after("### Error reasons")
    error = cls.__new__(cls)
    assert documented[cls.default_reason][0] == status_code_for(error).name
