"""Byte counts as people read them, for the master's logs and
``pscheduler --message``."""


def format_size(size):
    """``812B``, ``1.5KB``, ``250.0MB``, ``2.1GB`` (powers of 1000, as
    ``scheduler.child.memory_limit`` reads ``250MB``)."""
    size = size or 0
    for unit in ('B', 'KB', 'MB', 'GB'):
        if size < 1000 or unit == 'GB':
            return f'{size:.0f}{unit}' if unit == 'B' else f'{size:.1f}{unit}'
        size /= 1000
