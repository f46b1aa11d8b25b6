"""What an unsigned network broker exposes, said once at start.

Without ``scheduler.broker.secret`` the consumer cannot tell the
application's messages from anyone else's: whoever can write to a shared
Redis or RabbitMQ can run jobs. The embedded SQLite file is reached only
through the file system, so it is not warned about.
"""
import logging

from .values import redact_url

log = logging.getLogger(__name__)

# kombu's in-process transport: nothing outside the process reaches it.
IN_PROCESS_SCHEMES = ('memory',)


def warn_if_unsigned_network_broker(settings):
    """Log a WARNING when a network broker carries unsigned messages.

    Called where the application's scheduler is configured, so both the web
    app and the pscheduler child (which loads the app the same way) say it.
    """
    scheme = settings.broker_url.partition(':')[0].lower()
    if settings.embedded or settings.secrets or scheme in IN_PROCESS_SCHEMES:
        return
    log.warning(
        'scheduler.broker.url is a network broker (%s) and '
        'scheduler.broker.secret is not set: anyone who can write to the '
        'broker can run any allowed job function (%s) with any arguments, '
        'and anyone who can read it sees every job\'s arguments. Set '
        'scheduler.broker.secret (or scheduler.broker.secret.file / '
        'scheduler.broker.secret.env) to at least 16 random characters, the '
        'same in the web app and pscheduler, and keep the broker private '
        '(the secret signs messages, it does not encrypt them)',
        redact_url(settings.broker_url), settings.allowed_modules.describe())


def warn_if_pickle_unsigned(settings):
    """Log a WARNING when unsigned messages are unpickled: whoever writes
    to the broker, even the embedded file, then runs code in the consumer.
    Called by a runtime as it starts (only consumers unpickle)."""
    if settings.serializer == 'pickle' and not settings.secrets:
        log.warning('scheduler.broker.serializer is pickle and '
                    'scheduler.broker.secret is not set: anyone who can '
                    'write to the broker can run code in this process. '
                    'Set a secret, or use the json serializer')
