"""Job functions inside the test applications' own package (tests.apps).

pyramid_scheduler lets an application's own package run jobs without any
setting: these run where tests.jobs (outside the package) is refused. The
imports are what a real job module often has; the hostile messages of
tests/test_default_deny.py reach them as ``tests.apps.appjobs:os.system``,
``...:subprocess.run`` and ``...:imported_record``, which must be refused:
what they name is defined outside the package.
"""
import os  # noqa: F401 (see the module docstring)
import subprocess  # noqa: F401

from tests import jobs
from tests.jobs import record as imported_record  # noqa: F401


def record(path, *values):
    """A real job of the application: records its run like tests.jobs."""
    jobs.record(path, *values)
