"""benchmarks/processes.py's CPU clock: precise, and counting the threads that have ended."""

from __future__ import annotations

import os
import subprocess
import sys

from benchmarks.processes import cpu_seconds

# Burns CPU in a thread that ends, reports its own CPU time, then waits to be told to exit.
_CHILD = """
import sys, threading, time
def burn():
    x = 0
    for _ in range(3_000_000):
        x += 1
worker = threading.Thread(target=burn)
worker.start()
worker.join()
print(time.process_time(), flush=True)
sys.stdin.readline()
"""


def _proc_stat_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_process_cpu_time_counts_its_ended_threads_to_the_microsecond() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        own = float(child.stdout.readline())  # the child's own view, after its thread ended
        measured = cpu_seconds(child.pid)
        ticks = _proc_stat_seconds(child.pid)
        main_thread = cpu_seconds(child.pid, child.pid)
    finally:
        child.communicate("exit\n")
    # The ended thread's time is in: the process spent more than its main thread.
    assert own <= measured < own + 0.05
    assert main_thread < measured
    assert abs(measured - ticks) <= 0.02  # /proc's figure, to its 10 ms ticks
    # Not a multiple of a clock tick (/proc's unit): the nanosecond clock was read.
    assert round(measured * 1e6) % 10_000 != 0
    assert cpu_seconds(child.pid) == 0.0  # reaped: gone
