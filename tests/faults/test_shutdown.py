"""SIGTERM with a turn running: the turn gets its grace period, then ends cancelled and
recorded; the session is free; the process exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import grpc
import pytest

from agent_runtime import bootstrap
from agent_runtime.config import DatabaseSettings, ServerSettings, Settings
from agent_runtime.v1 import agent_runtime_pb2 as rt
from tests.support.databases import query
from tests.support.fake_model_server import FakeModelServer, stall_after, text_answer
from tests.support.grpc_helpers import user_message
from tests.support.runtime_fixtures import connect
from tests.support.server_process import ServerProcess


async def test_sigterm_cancels_running_turns_cleanly_after_the_grace_period(
    database_url: str,
) -> None:
    db = database_url
    async with FakeModelServer() as model:
        upstream_closed = asyncio.Event()
        model.enqueue(stall_after("working on it ", on_disconnect=upstream_closed.set))
        env = {
            "AGENT_RUNTIME_LLM_BASE_URL": model.base_url,
            "AGENT_RUNTIME_SHUTDOWN_GRACE_SECONDS": "0.5",
        }
        server = ServerProcess(db, env=env)
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = connect(channel).runtime.StreamMessage(user_message("s1", "long job"))
            started = await call.read()
            await call.read()  # the first delta: the model call is under way
            exit_code = await server.terminate()
            await asyncio.wait_for(upstream_closed.wait(), 5)
            rest = []
            while (chunk := await call.read()) is not grpc.aio.EOF:
                rest.append(chunk)
            # The client hears how its turn ended.
            assert rest[-1].turn_completed.stop_reason == rt.STOP_REASON_CANCELLED
        assert exit_code == 0, server.output()
        assert "shutting down" in server.output()

        assert await query(
            db, "SELECT status FROM turns WHERE turn_id = :t", t=started.turn_id
        ) == [("cancelled",)]
        assert await query(db, "SELECT running_turn_id FROM sessions") == [(None,)]
        assert await query(db, "SELECT content, incomplete FROM messages ORDER BY position") == [
            ("long job", 0),
            ("working on it ", 1),
        ]

        restarted = ServerProcess(db, env=env)
        await restarted.start()
        try:
            model.enqueue(text_answer("done now"))
            async with grpc.aio.insecure_channel(restarted.address) as channel:
                chunks = await connect(channel).turn(user_message("s1", "again"))
            assert chunks[-2].assistant_message.content == "done now"
        finally:
            assert await restarted.terminate() == 0


def open_files_under(folder: Path) -> list[str]:
    """The files in `folder` this process holds open (Linux: /proc/self/fd)."""
    held = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):  # closed since it was listed
            target = os.readlink(fd)
            if target.startswith(str(folder)):
                held.append(target)
    return held


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc")
async def test_stop_closes_every_handle_on_the_database(tmp_path: Path) -> None:
    # The SQLite file is read and written on several connections: the writer, the readers,
    # the engine's pool and the readiness probe's own. Stopping closes them all.
    settings = Settings(
        server=ServerSettings(listen="127.0.0.1:0"),
        database=DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'rt.db'}"),
    )
    runtime = await bootstrap.start(settings)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as channel:
        chunks = await connect(channel).turn(user_message("s1", "hello"))
        assert chunks[-1].turn_completed.stop_reason == rt.STOP_REASON_END_TURN
    assert open_files_under(tmp_path)  # the runtime works on the file...
    await runtime.stop(grace=None)
    assert open_files_under(tmp_path) == []  # ...and lets go of it when stopped
