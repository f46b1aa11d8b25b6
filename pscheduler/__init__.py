"""pscheduler: the supervisor daemon that runs pyramid_scheduler's jobs.

A master process reads the ini file (without importing the application),
forks one child per queue and supervises them; each child loads the
application and runs the job runtime of its queue. See ``pscheduler --help``.

Modules, one responsibility each:

- :mod:`pscheduler.cli`: the command line, ``--reload`` and ``--restart``;
- :mod:`pscheduler.config`: reading and validating the ini without the app;
- :mod:`pscheduler.master`: the supervisor loop (signals, restarts, reload);
- :mod:`pscheduler.handles`: the master's handle on one forked child, and
  the fork that makes it;
- :mod:`pscheduler.slots`: the slots a configuration asks for, and the
  reload roll's rules over them;
- :mod:`pscheduler.restarts`: when a child that exited unasked is replaced,
  and when the master gives up;
- :mod:`pscheduler.stopping`: the master's shutdown (drain, second signal,
  halt) and the kill deadline of a child asked to stop;
- :mod:`pscheduler.reload`: a SIGHUP reload carried out on the slots;
- :mod:`pscheduler.health`: the heartbeat and memory check of a child;
- :mod:`pscheduler.child`: what runs inside a child, after the fork;
- :mod:`pscheduler.channel`: the child-to-master report pipe;
- :mod:`pscheduler.heartbeat`: the child's liveness file;
- :mod:`pscheduler.backoff`, :mod:`pscheduler.signals`,
  :mod:`pscheduler.pidfile`, :mod:`pscheduler.systemd`,
  :mod:`pscheduler.titles`, :mod:`pscheduler.sizes`: small helpers;
- :mod:`pscheduler.message`: ``pscheduler --message``, the admin client;
- :mod:`pscheduler.exitcodes`: what each exit code means.
"""
