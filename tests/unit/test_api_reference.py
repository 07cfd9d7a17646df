"""The README's API reference names every RPC, chunk and error reason the code has."""

from __future__ import annotations

import ast
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


# An UPPER_SNAKE_CASE value; `<...>` stands for a part an f-string fills in (MODEL_HTTP_<status>).
_REASON = re.compile(r"[A-Z][A-Z0-9]*(?:_(?:[A-Z0-9]+|<[^<>]+>))*")


def _texts(node: ast.expr, names: dict[str, set[str]]) -> set[str]:
    """The strings an expression can have, with `<source>` for an f-string's fields; none
    when it is computed otherwise (a reason passed on: found where it is made)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name):
        return names.get(node.id, set())
    if isinstance(node, ast.IfExp):
        return _texts(node.body, names) | _texts(node.orelse, names)
    if isinstance(node, ast.JoinedStr):
        text = ""
        for part in node.values:
            if isinstance(part, ast.FormattedValue):
                text += f"<{ast.unparse(part.value)}>"
            elif isinstance(part, ast.Constant):
                text += str(part.value)
        return {text}
    return set()


def _reason_positions(trees: list[ast.Module]) -> dict[str, set[int]]:
    """Callable name -> the positional argument indices that take a `reason`, from every
    function's parameters and every dataclass's fields (ambiguous names: all of them)."""
    positions: dict[str, set[int]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
                if names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                if "reason" in names:
                    positions.setdefault(node.name, set()).add(names.index("reason"))
            elif isinstance(node, ast.ClassDef):
                fields = [
                    item.target.id
                    for item in node.body
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                ]
                if "reason" in fields:
                    positions.setdefault(node.name, set()).add(fields.index("reason"))
                init = [
                    item
                    for item in node.body
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__"
                ]
                if init and (found := positions.get("__init__")):
                    positions.setdefault(node.name, set()).update(found)
    return positions


def _called_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return ""


def _reasons_in(tree: ast.Module, positions: dict[str, set[int]]) -> set[str]:
    """Every string the module uses as an error reason: `reason=` arguments (keyword or
    positional), `default_reason` class attributes and `"reason"` entries of dicts (event
    payloads)."""
    # A name stands for every string the module assigns to it (`reason = f"..."`, then
    # `reason=reason`).
    names: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.setdefault(target.id, set()).update(_texts(node.value, {}))
    values: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            values += [k.value for k in node.keywords if k.arg == "reason"]
            indices = positions.get(_called_name(node), set())
            values += [arg for i, arg in enumerate(node.args) if i in indices]
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if node.value is not None and any(
                isinstance(t, ast.Name) and t.id == "default_reason" for t in targets
            ):
                values.append(node.value)
        elif isinstance(node, ast.Dict):
            values += [
                value
                for key, value in zip(node.keys, node.values, strict=True)
                if isinstance(key, ast.Constant) and key.value == "reason"
            ]
    return {text for value in values for text in _texts(value, names) if _REASON.fullmatch(text)}


def _reasons_in_code() -> dict[str, str]:
    """Every reason the code can emit -> the first module that does."""
    modules = sorted(
        path
        for path in (ROOT / "agent_runtime").rglob("*.py")
        if "v1" not in path.relative_to(ROOT).parts  # generated protobuf code
    )
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in modules]
    positions = _reason_positions(trees)
    found: dict[str, str] = {}
    for path, tree in zip(modules, trees, strict=True):
        for reason in _reasons_in(tree, positions):
            found.setdefault(reason, str(path.relative_to(ROOT)))
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


def test_the_list_agents_row_names_every_field_of_an_agent() -> None:
    (_, returns, _) = _table_after("### RPCs")["AgentService/ListAgents"]
    named = set(re.findall(r"`(\w+)(?:`|$)", returns))  # the cell lost its last backtick
    assert {field.name for field in agent_pb2.Agent.DESCRIPTOR.fields} <= named


def test_every_chunk_is_in_the_chunk_table() -> None:
    documented = _table_after("### Chunks")
    oneof = agent_runtime_pb2.StreamChunk.DESCRIPTOR.oneofs_by_name["chunk"]
    assert {field.name for field in oneof.fields} == set(documented)


def test_every_error_reason_is_in_the_reason_table() -> None:
    documented = _table_after("### Error reasons")
    missing = {r: where for r, where in _reasons_in_code().items() if r not in documented}
    assert not missing, f"add these reasons to the README's error table: {missing}"


def test_every_documented_reason_is_one_the_code_emits() -> None:
    stale = set(_table_after("### Error reasons")) - set(_reasons_in_code())
    assert not stale, f"the README documents reasons nothing emits: {sorted(stale)}"


def test_reasons_are_found_wherever_the_code_makes_them() -> None:
    """The finder itself: each way a reason is made in agent_runtime, as a module."""
    source = """
RETIRED = "SESSION_RETIRED_X"

@dataclass
class Verdict:
    kind: str
    reason: str

class Refusal(DomainError):
    default_reason = "REFUSAL_X"

def fail(status, reason=None): ...

raise NotFound("gone", reason="GONE_X")
raise Refusal("no", reason=f"HTTP_X_{status}")
Verdict("bad", "VERDICT_X")
fail(404, "FAIL_X")
uow.events.add(Event(TYPE, {"reason": "EVENT_X", "message": "a sentence, not a reason"}))
raise AlreadyExists("taken", reason=RETIRED)
raise Rejected("4xx", reason="REJECTED_X" if rejected else "IGNORED_X")
def status_error(status):
    reason = f"STATUS_X_{status}"
    return Refusal("failed", reason=reason)
switch_agent(target, reason="the user asked")
raise NotFound("passed on", reason=error.reason)
"""
    tree = ast.parse(source)
    assert _reasons_in(tree, _reason_positions([tree])) == {
        "SESSION_RETIRED_X",
        "REFUSAL_X",
        "GONE_X",
        "HTTP_X_<status>",
        "VERDICT_X",
        "FAIL_X",
        "EVENT_X",
        "REJECTED_X",
        "IGNORED_X",
        "STATUS_X_<status>",
    }


@pytest.mark.parametrize("cls", _domain_error_classes(), ids=lambda cls: cls.__name__)
def test_the_documented_code_of_each_default_reason_is_the_mapped_one(
    cls: type[errors.DomainError],
) -> None:
    documented = _table_after("### Error reasons")
    error = cls.__new__(cls)
    assert documented[cls.default_reason][0] == status_code_for(error).name
