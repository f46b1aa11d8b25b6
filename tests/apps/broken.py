"""An application whose import fails, as after a bad deployment."""
import pscheduler_test_module_that_does_not_exist  # noqa: F401


def main(global_config, **settings):  # pragma: no cover (never imported)
    raise AssertionError('unreachable')
