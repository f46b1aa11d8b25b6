"""Shim: our Redis transport lives in ``pyramid_scheduler.transports.redis``.

``channel.py`` there holds the transport (FETCH_BATCH, QoS, Channel,
Transport, slot_options, fetched_key), ``restore.py`` the restores of what a
dead consumer left behind. This path stays importable for one release; it
imports redis (only a Redis broker imports it).
"""
from .transports.redis.channel import (
    FETCH_BATCH, FETCHED_PREFIX, MAX_FETCH_BATCH, Channel, QoS, Transport,
    fetched_key, slot_options)
from .transports.redis.restore import (
    restore_fetched, restore_orphaned_messages, restore_removed_slots)

__all__ = [
    'FETCH_BATCH', 'FETCHED_PREFIX', 'MAX_FETCH_BATCH', 'Channel', 'QoS',
    'Transport', 'fetched_key', 'restore_fetched',
    'restore_orphaned_messages', 'restore_removed_slots', 'slot_options',
]
