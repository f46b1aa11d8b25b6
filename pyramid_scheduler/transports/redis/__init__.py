"""The Redis broker: our kombu transport (channel.py), the restores of what
a dead consumer left behind (restore.py) and the one-LPUSH publisher
(publish.py).

Everything here imports ``redis``, an optional extra: only
``pyramid_scheduler.transports`` imports these modules, and only for a
Redis broker URL or channel. This ``__init__`` imports nothing.
"""
