"""Whether the Redis broker keeps what it accepted when it is killed.

A job sent to Redis is in its memory only, unless the server writes an
append-only file: with ``appendonly no`` a Redis killed (or its host lost)
loses every message it held since its last RDB snapshot, which with
``save ""`` means all of them (3,854 of 5,000 queued jobs in a fault run).
Nothing on our side can confirm a write the server does not make, so we
say it, once at start (README, "Delivery guarantees").

Asked with ``CONFIG GET``; a server that refuses it (a managed Redis, a
renamed command) is asked ``INFO persistence`` instead, and one that
answers neither is not reported: the check never stops a start.
"""
import logging

import redis

log = logging.getLogger('pyramid_scheduler.transports')

# Seconds the check may take: it runs once, at start.
CHECK_TIMEOUT = 2.0


def warn_if_volatile(url, label):
    """Log a WARNING if the Redis at ``url`` reports append-only off.

    ``label``: the URL as it may be logged (without its password).
    """
    try:
        appendonly = _appendonly(url)
    except Exception as exc:
        log.debug('could not ask the Redis broker %s whether it persists '
                  'messages (%s: %s)', label, type(exc).__name__, exc)
        return False
    if appendonly is not False:
        return False
    log.warning(
        'the Redis broker %s has append-only persistence off (appendonly '
        'no): if the server is killed or its host fails, every job queued '
        'in it since its last snapshot is lost. Set "appendonly yes" '
        '("appendfsync everysec" may lose the last second; "always" '
        'nothing) for a Redis that keeps every accepted job', label)
    return True


def _appendonly(url):
    """True, False, or None when the server does not say."""
    client = redis.Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT,
                                  socket_timeout=CHECK_TIMEOUT)
    try:
        try:
            answer = client.config_get('appendonly')
        except redis.ResponseError:
            # CONFIG refused: INFO says as much, if it is allowed.
            enabled = client.info('persistence').get('aof_enabled')
            return None if enabled is None else bool(int(enabled))
        value = answer.get('appendonly')
        return None if value is None else value.lower() == 'yes'
    finally:
        client.close()
