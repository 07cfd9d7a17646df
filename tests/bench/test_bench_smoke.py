"""The benchmark works and writes its files: `scripts/bench --quick` (seconds, tiny sizes),
once with the floor on each HTTP client (--floor-http-client).

No timing assertions: on a shared CI machine they would only measure the neighbours.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks.floor_relay import HTTP_CLIENTS
from tests.support.databases import POSTGRES_URL_VARIABLE

REPO = Path(__file__).resolve().parents[2]


# A whole benchmark run (20-30 s on a 2-core machine): past its own 180 s limit below.
@pytest.mark.timeout(240)
@pytest.mark.e2e
@pytest.mark.parametrize("floor_client", HTTP_CLIENTS)
def test_quick_benchmark_writes_json_markdown_and_chart(tmp_path: Path, floor_client: str) -> None:
    out = tmp_path / "out"
    # With a PostgreSQL server (CI has one), the replica mode is smoked too: once is enough,
    # it has no floor.
    postgres = os.environ.get(POSTGRES_URL_VARIABLE, "") if floor_client == "httpx" else ""
    completed = subprocess.run(
        [
            str(REPO / "scripts" / "bench"),
            "--quick",
            "--out",
            str(out),
            "--db-dir",
            str(tmp_path),
            "--floor-http-client",
            floor_client,
            *(["--postgres", postgres] if postgres else []),
        ],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert {
        "meta",
        "throughput",
        "added_latency",
        "history",
        "slow_streams",
        "targets",
        "table",
        "runtime_log",
    } <= results.keys()
    assert results["meta"]["quick"] is True
    assert results["meta"]["floor_http_client"] == floor_client
    for level in results["throughput"].values():
        for system in ("runtime", "floor"):
            assert level[system]["turns"] > 0
            assert {"turns_per_s", "e2e_ms", "ttft_ms", "added_ms", "errors"} <= level[
                system
            ].keys()
    # c=1 with 24 turns, 10 per session: the worker moved on to fresh sessions.
    assert results["throughput"]["1"]["runtime"]["sessions"] >= 3
    # c=1 alternates floor and runtime (2 rounds of 12 turns each); c=4 has 6 turns per
    # worker, too few to split, so one round.
    for system in ("runtime", "floor"):
        assert results["throughput"]["1"][system]["rounds"] == 2
        assert results["throughput"]["1"][system]["turns"] == 24
        assert results["throughput"]["4"][system]["rounds"] == 1
    assert {"runtime", "floor"} <= results["added_latency"].keys()
    assert results["history"]["runtime"]
    for system in ("runtime", "floor"):
        assert results["slow_streams"][system]["peak_rss_kib"] > 0
    assert [target["key"] for target in results["targets"]] == [
        "throughput_c32",
        "p99_e2e_c32",
        "added_latency_c1",
        "history_10000_vs_10",
        "slow_streams",
    ]

    if postgres:
        levels = results["replicas"]["levels"]
        assert list(levels) == ["1", "2"]
        assert all(level["ok_turns"] > 0 and level["errors"] == 0 for level in levels.values())

    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown
    assert ("## Replicas on PostgreSQL" in markdown) == bool(postgres)
    assert "| metric | runtime | floor | ratio | target | met? |" in markdown
    assert f"whose model calls go through {floor_client}" in markdown

    chart = (out / "chart.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(chart) > 10_000
