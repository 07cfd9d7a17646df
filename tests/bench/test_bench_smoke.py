"""The benchmark works and writes its files: `scripts/bench --quick` (seconds, tiny sizes),
every phase in a tiny form (the LiteLLM peer excepted: it installs a package of its own).

No timing assertions: on a shared CI machine they would only measure the neighbours.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.support.databases import POSTGRES_URL_VARIABLE

REPO = Path(__file__).resolve().parents[2]


# A whole benchmark run (20-40 s on a 2-core machine): past its own 180 s limit below.
@pytest.mark.timeout(240)
@pytest.mark.e2e
def test_quick_benchmark_writes_json_markdown_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # With a PostgreSQL server (CI has one), the replica mode is smoked too.
    postgres = os.environ.get(POSTGRES_URL_VARIABLE, "")
    completed = subprocess.run(
        [
            str(REPO / "scripts" / "bench"),
            "--quick",
            "--out",
            str(out),
            "--db-dir",
            str(tmp_path),
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
        "capacity",
        "added_latency",
        "history",
        "slow_streams",
        "targets",
        "table",
        "runtime_log",
    } <= results.keys()
    assert results["meta"]["quick"] is True
    assert results["peer"] is None
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
    # The capacity phase: both systems at each tiny level, every turn of a block answered in
    # full, the window's tokens measured, the harness's own CPU reported.
    capacity = results["capacity"]
    assert list(capacity["levels"]) == ["4", "8"]
    for level in capacity["levels"].values():
        for system in ("runtime", "floor"):
            figures = level[system]
            assert figures["errors"] == 0, figures["error_kinds"]
            assert figures["tokens_in_window"] > 0
            assert figures["turns_sent_in_window"] > 0
            assert figures["server_cpu_us_per_token"] > 0
            assert {"load_generators", "model", "server", "others"} <= figures["cores"].keys()
            assert figures["rss_kib"] > 0
    assert set(capacity["capacity"]) == {"runtime", "floor"}
    assert {"runtime", "floor"} <= results["added_latency"].keys()
    assert results["history"]["runtime"]
    for system in ("runtime", "floor"):
        assert results["slow_streams"][system]["peak_rss_kib"] > 0
    assert [target["key"] for target in results["targets"]] == [
        "capacity",
        "cpu_per_token",
        "burst_throughput",
        "burst_p99",
        "added_latency_c1",
        "history",
        "slow_streams",
    ]
    assert all(target["margin"] for target in results["targets"])

    if postgres:
        levels = results["replicas"]["levels"]
        assert list(levels) == ["1", "2"]
        assert all(level["ok_turns"] > 0 and level["errors"] == 0 for level in levels.values())

    markdown = (out / "results.md").read_text()
    assert "## Targets" in markdown
    assert ("## Replicas on PostgreSQL" in markdown) == bool(postgres)
    assert "## Capacity" in markdown
    assert "| metric | runtime | floor | ÷ floor | target | met? |" in markdown

    chart = (out / "chart.png").read_bytes()
    assert chart.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(chart) > 10_000
