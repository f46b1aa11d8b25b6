"""Job events and the listeners that receive them.

Events are fired in the process that runs the jobs (a pscheduler child, or
the web process in combined mode), from one place per job, so a listener sees
them in the order a person expects: created, then executed / failed / missed,
then removed; canceled, then removed.
"""
import logging
import threading

log = logging.getLogger(__name__)


class _AttributeDict(dict):
    """A dict whose keys are also attributes (as in 0.3.x)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class JobInfo(_AttributeDict):
    """What listeners get as ``event.job``: the job's spec, with attributes."""


class Event(_AttributeDict):
    """An event: a dict whose keys are also attributes (as in 0.3.x).

    Common keys: ``type``, ``job`` (a :class:`JobInfo`), ``queue``; a
    ``JOB_EXECUTED`` event has ``retval``, a ``JOB_FAILED`` one
    ``exception`` and ``traceback``, a ``MESSAGE`` one ``message``.
    """

    MESSAGE = 'message'
    JOB_CREATED = 'job.created'
    JOB_EXECUTED = 'job.executed'
    JOB_FAILED = 'job.failed'
    # A run failed and another is stored (instead of JOB_FAILED): has
    # ``exception``, ``traceback``, ``attempt`` (the run that failed) and
    # ``countdown`` (seconds until the next).
    JOB_RETRY = 'job.retry'
    JOB_MISSED = 'job.missed'
    JOB_CANCELED = 'job.canceled'
    JOB_REMOVED = 'job.removed'

    ALL = (MESSAGE, JOB_CREATED, JOB_EXECUTED, JOB_FAILED, JOB_MISSED,
           JOB_CANCELED, JOB_REMOVED, JOB_RETRY)

    def __init__(self, type, **params):
        super().__init__(params, type=type)

    def __repr__(self):
        params = {k: v for k, v in self.items() if k != 'type'}
        return f'<pyramid_scheduler.api.Event {self["type"]} {params!r}>'


class Listeners:
    """The listeners of one scheduler; safe to change from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries = []

    def add(self, listener, events=None, args=None, kwargs=None):
        if not callable(listener):
            raise TypeError(f'listener {listener!r} is not callable')
        unknown = set(events or ()) - set(Event.ALL)
        if unknown:
            raise ValueError(f'unknown event types {sorted(unknown)}; use the '
                             'constants of pyramid_scheduler.api.Event')
        entry = (listener, frozenset(events) if events else None,
                 tuple(args or ()), dict(kwargs or {}))
        with self._lock:
            self._entries = self._entries + [entry]

    def remove(self, listener):
        with self._lock:
            self._entries = [e for e in self._entries if e[0] is not listener]

    def wants(self, event_type):
        """Whether any listener receives events of ``event_type``: without
        one, the runtime does not even build the event."""
        return any(events is None or event_type in events
                   for _, events, _, _ in self._entries)

    def notify(self, event):
        # Iterate over a snapshot: a listener may add or remove listeners.
        for listener, events, args, kwargs in self._entries:
            if events is not None and event['type'] not in events:
                continue
            try:
                listener(event, *args, **kwargs)
            except Exception:
                log.exception('listener %r failed on %r', listener, event)
