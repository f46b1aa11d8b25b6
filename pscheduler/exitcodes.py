"""Exit codes of ``pscheduler``: one per cause, so supervisors can act.

systemd's ``RestartPreventExitStatus=`` and scripts use them to tell a
mistake that a restart will not fix (usage, configuration, an application
that does not include the scheduler or runs it combined) from a failure worth
retrying. 10, 11 and 20 keep the meaning they had in pyramid_scheduler 0.3.
"""
OK = 0
FAILURE = 1
USAGE = 2
CONFIG = 3
NO_ANSWER = 4
COMMAND_ERROR = 5
NO_SCHEDULER = 10
COMBINED = 11
HARD_TIME_LIMIT = 12
BOOT_FAILED = 20
START_FAILED = 21

MEANINGS = (
    (OK, 'stopped on request (SIGTERM/SIGINT), --message answered, or\n'
         '--run sent its job'),
    (FAILURE, 'unexpected error in pscheduler itself (traceback in the log)'),
    (USAGE, 'bad command line, e.g. a --queue that is not configured,\n'
            'a --message argument the command does not take, or a --run\n'
            'job refused (its function, --args, --kwargs or --id)'),
    (CONFIG, 'the ini file cannot be read or a scheduler.* setting is\n'
             'invalid, found by the master or by a child (a dotted name\n'
             'that does not import, a broker or job store refusing the\n'
             'password or database)'),
    (NO_ANSWER, '--message: a queue did not answer within the timeout, or\n'
                '--message could not be sent (broker down, disk full);\n'
                '--run: the job could not be sent (the same causes)'),
    (COMMAND_ERROR, '--message: a queue answered with an error (e.g. an '
                    'unknown command)'),
    (NO_SCHEDULER, 'the application does not include pyramid_scheduler'),
    (COMBINED, 'the application is configured scheduler.combined = true'),
    (HARD_TIME_LIMIT, 'a child only, never pscheduler: a job ran longer '
                      'than its\nhard_time_limit; the master starts a new '
                      'child at once'),
    (BOOT_FAILED, 'a child failed to start scheduler.child.boot_failures\n'
                  'times in a row (application import error, ...)'),
    (START_FAILED, 'the --pidfile names a running pscheduler or cannot be '
                   'written'),
)

# Exit codes a child reports that no retry can fix: the master stops at once
# with the same code instead of counting boot failures. CONFIG: a setting
# only the child can check (a dotted name of the application, a broker or
# job store refusing the password or database).
FATAL_CHILD_CODES = (CONFIG, NO_SCHEDULER, COMBINED)


def describe():
    """The table for ``--help``."""
    lines = []
    for code, meaning in MEANINGS:
        first, *rest = meaning.split('\n')
        lines.append(f'  {code:>3}  {first}')
        lines.extend(f'       {line}' for line in rest)
    return '\n'.join(lines)


class ExitError(Exception):
    """An error that ends pscheduler with a given exit code and message."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code
