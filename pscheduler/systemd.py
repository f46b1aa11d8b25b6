"""sd_notify(3): tell systemd (``Type=notify``) how the service is doing.

The protocol is one datagram of ``KEY=VALUE`` lines to the unix socket named
by ``$NOTIFY_SOCKET``; a name starting with ``@`` is in the abstract
namespace. Outside systemd the variable is unset and this does nothing.
The socket lives only for the call, so none is ever open across a fork.
"""
import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(**fields):
    """Send ``FIELD=value`` lines; ``notify(READY=1, STATUS='...')``."""
    address = os.environ.get('NOTIFY_SOCKET')
    if not address:
        return False
    if address.startswith('@'):
        address = '\0' + address[1:]
    payload = '\n'.join(f'{key}={value}' for key, value in fields.items())
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(payload.encode())
    except OSError as exc:
        log.warning('could not notify systemd (%s): %s', address, exc)
        return False
    return True


def ready(status):
    return notify(READY=1, STATUS=status)


def reloading(status):
    # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match the
    # reload to the request; older versions ignore it.
    return notify(RELOADING=1, STATUS=status,
                  MONOTONIC_USEC=time.clock_gettime_ns(
                      time.CLOCK_MONOTONIC) // 1000)


def stopping(status):
    return notify(STOPPING=1, STATUS=status)


def status(text):
    return notify(STATUS=text)
