"""The wire format: one versioned message body per job or command.

Every body is a dict::

    {"protocol": "pyramid_scheduler", "version": 1, "type": TYPE, ...}

with these types (see README.rst, "Wire format"):

- ``job.created``: ``{"queue": str, "job": spec}`` where spec is the dict
  built by :func:`pyramid_scheduler.jobs.build_spec`.
- ``job.canceled``: ``{"queue": str, "job_id": str}``.
- ``command``: ``{"command": str, "args": dict, "reply_to": str|None,
  "request_id": str, "expires_at": float}``; sent by
  ``pscheduler --message``.
- ``reply``: ``{"request_id": str, "queue": str, "pid": int, "result": ...}``.

A consumer accepts every version from ``MIN_VERSION`` to ``VERSION``; a
message of any other version is rejected with a log line naming both.
"""
import time

from .errors import InvalidMessage

PROTOCOL = 'pyramid_scheduler'
VERSION = 1
MIN_VERSION = 1

JOB_CREATED = 'job.created'
JOB_CANCELED = 'job.canceled'
COMMAND = 'command'
REPLY = 'reply'
TYPES = (JOB_CREATED, JOB_CANCELED, COMMAND, REPLY)

_REQUIRED = {
    JOB_CREATED: ('queue', 'job'),
    JOB_CANCELED: ('queue', 'job_id'),
    COMMAND: ('command', 'request_id', 'expires_at'),
    REPLY: ('request_id', 'queue', 'pid'),
}
_REQUIRED_JOB = ('id', 'kind', 'func', 'args', 'kwargs', 'trigger', 'options')


def envelope(type_, **fields):
    return {'protocol': PROTOCOL, 'version': VERSION, 'type': type_,
            'sent_at': time.time(), **fields}


def job_created(queue, spec):
    return envelope(JOB_CREATED, queue=queue, job=spec)


def job_canceled(queue, job_id):
    return envelope(JOB_CANCELED, queue=queue, job_id=job_id)


def command(name, request_id, reply_to=None, args=None, ttl=60.0):
    return envelope(COMMAND, command=name, args=args or {},
                    reply_to=reply_to, request_id=request_id,
                    expires_at=time.time() + ttl)


def reply(request_id, queue, pid, result=None, error=None):
    return envelope(REPLY, request_id=request_id, queue=queue, pid=pid,
                    result=result, error=error)


def validate(body):
    """Check a decoded body; return it, or raise InvalidMessage saying why."""
    if not isinstance(body, dict):
        raise InvalidMessage(f'message body is a {type(body).__name__}, '
                             'not a dict')
    if body.get('protocol') != PROTOCOL:
        raise InvalidMessage(f'not a {PROTOCOL} message (protocol '
                             f'{body.get("protocol")!r})')
    version = body.get('version')
    if not isinstance(version, int) or not MIN_VERSION <= version <= VERSION:
        raise InvalidMessage(
            f'message version {version!r} is not supported by this '
            f'pyramid_scheduler (it reads versions {MIN_VERSION} to '
            f'{VERSION}); upgrade the side that is older')
    type_ = body.get('type')
    if type_ not in TYPES:
        raise InvalidMessage(f'unknown message type {type_!r}')
    missing = [f for f in _REQUIRED[type_] if f not in body]
    if missing:
        raise InvalidMessage(f'{type_} message lacks {", ".join(missing)}')
    if type_ == JOB_CREATED:
        _validate_job(body['job'])
    return body


def _validate_job(spec):
    if not isinstance(spec, dict):
        raise InvalidMessage('job.created message has no job dict')
    missing = [f for f in _REQUIRED_JOB if f not in spec]
    if missing:
        raise InvalidMessage(f'job lacks {", ".join(missing)}')
    if spec['kind'] not in ('async', 'date', 'interval', 'cron'):
        raise InvalidMessage(f'unknown job kind {spec["kind"]!r}')
    if not isinstance(spec['args'], list) or not isinstance(
            spec['kwargs'], dict) or not isinstance(spec['trigger'], dict) \
            or not isinstance(spec['options'], dict):
        raise InvalidMessage('job args, kwargs, trigger or options have the '
                             'wrong type')
    if not isinstance(spec['func'], str) or ':' not in spec['func']:
        raise InvalidMessage(f'job func {spec["func"]!r} is not a '
                             '"module:function" reference')
