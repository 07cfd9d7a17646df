"""The benchmark harness behind `scripts/bench` (see docs/benchmarks/README.md).

Everything runs on 127.0.0.1, each server in its own process:

- `fake_model`: a zero-latency OpenAI-compatible endpoint that stamps every token with the
  wall-clock time it left the process, so delays can be measured across processes;
- `floor_relay`: a bare grpc.aio relay of the same model answer (no database, no domain
  logic), the floor every runtime figure is divided by;
- the runtime itself (`python -m agent_runtime serve`) on a fresh SQLite file;
- `load`: the gRPC load generator, run in the `scripts/bench` process.
"""
