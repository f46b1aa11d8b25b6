"""Job functions for ``bench/sqlite_transport.py --stack``."""
import time


def since(sent):
    """Seconds since ``sent`` (a time.monotonic() of the same machine)."""
    return time.monotonic() - sent
