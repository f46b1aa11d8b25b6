"""Benchmarks of pyramid_scheduler / pscheduler against raw kombu, Celery and
Huey on the same broker, in the same run: ``python -m bench --help``.

Results go to ``docs/benchmarks.rst`` (see there for the method).
"""
