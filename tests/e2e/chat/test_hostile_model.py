"""A hostile model against `agent-runtime chat`: what it asks for is shown to the person whole
and harmless before any approval, and its tool calls can neither crash nor freeze the client.

Driven through a pseudo-terminal against a real server process whose model endpoint (the
scripted FakeModelServer) returns the hostile answers."""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.chat_terminal import (
    APPROVAL_PROMPT,
    PROMPT,
    open_chat,
    serving,
    tool_answer_sent,
)
from tests.support.child_processes import SEARCH_WORKER, children_running
from tests.support.fake_model_server import FakeModelServer, text_answer, tool_call_answer
from tests.support.server_process import ServerProcess
from tests.support.waiting import eventually

MORE = r"-- more: [^\n]*Enter for the next page --"
# The terminal control sequences a model may try to slip into what the client prints: erase the
# line and return (redraws a prompt), the 8-bit CSI, a right-to-left override, an OSC 52
# clipboard write.
HIDING = "\r\x1b[2K\x9b1A\u202e"
ESCAPED_HIDING = r"\r\u001b[2K\u009b1A\u202e"
CLIPBOARD = "\x1b]52;c;ZWNobyBwd25lZA==\x07"


# The client's own styles (dim, and back to normal): the only escapes it writes itself.
OWN_STYLES = ("\x1b[2m", "\x1b[0m")


def raw_control_characters(screen: str) -> set[str]:
    """Control characters in what the client printed (the terminal's own \r\n and the
    client's own styles aside)."""
    for style in OWN_STYLES:
        screen = screen.replace(style, "")
    return {c for c in screen.replace("\r\n", "\n") if c in "\r\x1b\x07\x9b\u202e"}


def only_execute_command_unapproved(tmp_path: Path) -> dict[str, str]:
    """A runtime whose policy lets execute_command through: the client asks [y/N] itself."""
    agents = tmp_path / "agents.toml"
    agents.write_text('[approval]\nrequire = ["write_file"]\n')
    return {"AGENT_RUNTIME_AGENTS_FILE": str(agents)}


async def test_a_command_padded_past_any_cut_is_shown_whole_before_the_approval(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    command = "echo harmless" + " " * 420 + "; touch pwned"
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": command}),
        text_answer("Fine"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("say something harmless")
    screen = await chat.expect(APPROVAL_PROMPT)
    assert "; touch pwned" in screen  # on the screen before the question is put
    chat.type("r")
    await chat.expect(r"feedback for the model \(optional\): ")
    chat.type("")
    await chat.expect("assistant> Fine")
    await chat.expect(PROMPT)
    assert not (workspace / "pwned").exists()
    assert await chat.leave() == 0


async def test_a_very_long_command_is_paged_and_asked_about_only_after_its_last_page(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    command = "echo harmless" + " " * 30_000 + "; touch pwned"
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": command}),
        text_answer("Fine"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("say something harmless")
    pages = 1
    while await chat.expect_first(MORE, APPROVAL_PROMPT) == 0:
        assert "; touch pwned" not in chat.screen()
        pages += 1
        chat.type("")  # Enter: the next page
    assert pages >= 3  # 30 000 characters on a 50 x 200 terminal
    assert "; touch pwned" in chat.screen()  # the last page, right above the question
    chat.type("r")
    await chat.expect(r"feedback for the model \(optional\): ")
    chat.type("")
    await chat.expect(PROMPT)
    assert not (workspace / "pwned").exists()
    assert await chat.leave() == 0


async def test_control_characters_cannot_redraw_the_approval_prompts(
    model_server: FakeModelServer, workspace: Path, tmp_path: Path
) -> None:
    command = f"echo harmless{HIDING}touch pwned"
    model_server.enqueue(
        tool_call_answer("execute_command", {"command": command}),
        text_answer("Fine"),
        tool_call_answer("write_file", {"path": f"a{HIDING}b", "content": "x"}, call_id="c2"),
        text_answer("Fine again"),
    )
    async with serving(model_server, tmp_path, **only_execute_command_unapproved(tmp_path)) as srv:
        chat = open_chat(srv, workspace)
        await chat.expect(PROMPT)
        chat.type("say something harmless")
        screen = await chat.expect(r"in the workspace\? \[y/N\] ")
        assert f"echo harmless{ESCAPED_HIDING}touch pwned" in screen
        assert not raw_control_characters(screen)
        chat.type("n")
        await chat.expect(PROMPT)
        chat.type("write something")
        screen = await chat.expect(APPROVAL_PROMPT)
        assert f"a{ESCAPED_HIDING}b" in screen
        assert not raw_control_characters(screen)
        chat.type("r")
        await chat.expect(r"feedback for the model \(optional\): ")
        chat.type("")
        await chat.expect(PROMPT)
        assert not (workspace / "pwned").exists()
        assert await chat.leave() == 0


async def test_control_characters_in_model_text_and_tool_output_are_shown_escaped(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    # No carriage return in the file: read as text, it would end the line.
    (workspace / "trap.txt").write_text(f"looks fine{HIDING[1:]}{CLIPBOARD}\n")
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "trap.txt"}),
        tool_call_answer(
            "ask_followup_question",
            {"question": f"Go on?{HIDING}", "suggestions": [f"yes{CLIPBOARD}"]},
            call_id="c2",
        ),
        text_answer(f"All done{CLIPBOARD}{HIDING}"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("look at trap.txt")
    screen = await chat.expect("your answer: ")
    chat.type("1")
    screen += await chat.expect(PROMPT)
    assert f"-> ok: looks fine{ESCAPED_HIDING[2:]}" + r"\u001b]52;c;" in screen
    assert f"[question] Go on?{ESCAPED_HIDING}" in screen
    assert r"All done\u001b]52;c;ZWNobyBwd25lZA==\u0007" in screen
    assert not raw_control_characters(screen)
    # The model gets the text as it is: only the screen shows it escaped.
    assert tool_answer_sent(model_server, 1)["content"] == f"looks fine{HIDING[1:]}{CLIPBOARD}\n"
    assert tool_answer_sent(model_server, 2)["content"] == f"yes{CLIPBOARD}"
    assert await chat.leave() == 0


async def test_text_the_terminal_cannot_encode_is_shown_escaped_not_a_crash(
    server: ServerProcess, model_server: FakeModelServer
) -> None:
    model_server.enqueue(text_answer("caf\u00e9 \u2615 done"))
    chat = open_chat(server, None, PYTHONIOENCODING="ascii")
    await chat.expect(PROMPT)
    chat.type("hello")
    await chat.expect(r"assistant> caf\\xe9 \\u2615 done")
    await chat.expect(PROMPT)
    assert await chat.leave() == 0


async def test_failing_tools_become_error_results_for_the_model(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    (workspace / "notes.txt").write_text("some notes\n")
    (workspace / "loop").symlink_to("loop")
    model_server.enqueue(
        tool_call_answer("read_file", {"path": "notes.txt", "encoding": "no-such-codec"}),
        tool_call_answer("read_file", {"path": "notes.txt", "encoding": "rot13"}, call_id="c2"),
        tool_call_answer("read_file", {"path": "loop"}, call_id="c3"),
        tool_call_answer("list_files", {"path": ".", "recursive": True}, call_id="c4"),
        text_answer("I will stop trying"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("read the notes")
    await chat.expect("-> error: unknown encoding 'no-such-codec'")
    await chat.expect("-> error: unknown encoding 'rot13'")
    await chat.expect("-> error: ")
    await chat.expect("-> ok: ")
    await chat.expect("assistant> I will stop trying")
    await chat.expect(PROMPT)
    assert tool_answer_sent(model_server, 1)["content"] == "ERROR: unknown encoding 'no-such-codec'"
    assert tool_answer_sent(model_server, 3)["content"].startswith("ERROR: ")
    assert "notes.txt" in tool_answer_sent(model_server, 4)["content"].splitlines()
    assert await chat.leave() == 0


async def test_a_fifo_in_the_workspace_neither_hangs_a_search_nor_a_read(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    os.mkfifo(workspace / "a.pipe")
    (workspace / "b.txt").write_text("the needle\n")
    model_server.enqueue(
        tool_call_answer("search_in_code", {"query": "needle"}),
        tool_call_answer("read_file", {"path": "a.pipe"}, call_id="c2"),
        text_answer("Found it"),
    )
    chat = open_chat(server, workspace)
    await chat.expect(PROMPT)
    chat.type("find the needle")
    await chat.expect("-> ok: b.txt:1: the needle")
    await chat.expect("-> error: not a regular file: a.pipe")
    await chat.expect("assistant> Found it")
    await chat.expect(PROMPT)
    assert await chat.leave() == 0


async def test_ctrl_c_stops_a_search_stuck_in_a_catastrophic_regex(
    server: ServerProcess, model_server: FakeModelServer, workspace: Path
) -> None:
    (workspace / "crafted.txt").write_text("a" * 64 + "!\n")
    model_server.enqueue(
        tool_call_answer("search_in_code", {"query": "^(a+)+$", "regex": True}),
        text_answer("Searched"),
    )
    chat = open_chat(server, workspace)
    client = chat.child.pid
    assert client is not None
    await chat.expect(PROMPT)
    chat.type("search for runs of a")
    await chat.expect(r"\[tool call\] search_in_code")

    async def searching() -> bool:
        return bool(children_running(client, SEARCH_WORKER))

    await eventually(searching, what="the search to run")
    chat.child.sendintr()
    await chat.expect(r"\[stopped\]")
    await chat.expect(PROMPT)

    async def search_stopped() -> bool:
        return not children_running(client, SEARCH_WORKER)

    await eventually(search_stopped, what="the search to be stopped")
    assert await chat.leave() == 0
