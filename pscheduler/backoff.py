"""Exponential backoff between restarts of a child that keeps dying."""

FIRST_DELAY = 0.1   # a child killed once is back almost at once
MAX_DELAY = 30.0    # a child that dies all the time is retried twice a minute


class Backoff:
    def __init__(self, first=FIRST_DELAY, maximum=MAX_DELAY):
        self.first = first
        self.maximum = maximum
        self.failures = 0

    def next_delay(self):
        """Count one more failure; return how long to wait before retrying."""
        delay = min(self.first * 2 ** self.failures, self.maximum)
        self.failures += 1
        return delay

    def reset(self):
        self.failures = 0
