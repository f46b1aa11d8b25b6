"""Shim: the one-LPUSH Redis publisher lives in
``pyramid_scheduler.transports.redis.publish``.

This path stays importable for one release; it imports redis (only a Redis
broker imports it). ``pyramid_scheduler.transports.direct_publisher`` is
how the producer gets one.
"""
from .transports.redis.publish import (
    BODY_ENCODING, DEFAULT_HOST, DEFAULT_PORT, PERSISTENT, RedisPublisher,
    connection_options, declares_nothing, envelope, publisher_for)

__all__ = [
    'BODY_ENCODING', 'DEFAULT_HOST', 'DEFAULT_PORT', 'PERSISTENT',
    'RedisPublisher', 'connection_options', 'declares_nothing', 'envelope',
    'publisher_for',
]
