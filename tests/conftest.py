pytest_plugins = ["tests.support.runtime_fixtures"]
