"""Admin commands: ``pscheduler --message COMMAND app.ini``.

The sender puts one ``command`` message on the admin queue of every queue
(each served by one pscheduler child, or by the combined-mode web process)
and, for commands that answer, waits on a private reply queue
(:mod:`.client`). The runtime that owns the queue's job store handles it
(:mod:`.commands`). The two ends run in different processes.

Commands: ``print-jobs`` (logs each job store, as 0.3.x did), ``ping``,
``status``, ``jobs`` (a page of deferred jobs: args ``offset``, ``limit``),
``dead-letters``, ``purge-dead-letters``, and the failed-job registry:
``failed`` (arg ``limit``), ``requeue`` (arg ``id``) and ``purge-failed``.
Any other text is delivered to the runtime's listeners as a ``MESSAGE``
event and answered with an error.
"""
from .client import require_all, send_command
from .commands import COMMANDS

__all__ = ['COMMANDS', 'require_all', 'send_command']
