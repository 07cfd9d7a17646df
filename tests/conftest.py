import os

# Before anything imports grpc: pexpect forks this process (which holds gRPC threads) to start
# the terminal client, and gRPC's fork handlers would restart its pollers in the child, which
# then dies on the descriptors pexpect closes before exec.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = ["tests.support.runtime_fixtures", "tests.support.tiny_disk"]
