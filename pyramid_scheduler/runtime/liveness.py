"""Which threads a runtime depends on, and how each says it is alive.

:func:`watch_threads` gives the runtime's thread watch (state.ThreadWatch)
a check for each: the consumer thread (alive, and turning: it beats at each
turn), the async jobs' worker pool, APScheduler's thread (alive, and not in
one pass over the job stores longer than ``stuck_after``), the WAL
checkpointers of SQLite job stores, the watchdog of the jobs' time limits
(timelimits.py), and, on Redis, the thread keeping the consumer
instance's liveness key. A thread in one step longer than a
child's heartbeat timeout is stuck: that is how long the master waits for
a silent child too.
"""


def watch_threads(state, stuck_after, *, consumer, pool, deferred, alive,
                  limits):
    """``consumer()``: whether the consumer thread runs; ``deferred``:
    the DeferredJobs (None without job stores); ``alive``: the Redis
    liveness key's thread, or None; ``limits``: the TimeLimits whose
    watchdog thread enforces the jobs' time limits."""
    watch = state.threads.watch
    watch('consumer', lambda: _consumer_liveness(state, consumer,
                                                 stuck_after))
    watch('worker pool', pool.liveness)
    watch('time limits', lambda: _running(limits))
    if deferred is not None:
        scheduler, checkpointers = deferred.threads()
        watch('scheduler', lambda: scheduler.liveness(stuck_after))
        for checkpointer in checkpointers:
            watch(f'WAL checkpoint of {checkpointer.path}',
                  lambda c=checkpointer: _running(c))
    if alive is not None:
        watch('Redis liveness key', lambda: _running(alive))


def _running(thread_owner):
    return None if thread_owner.running else 'its thread has died'


def _consumer_liveness(state, consumer, stuck_after):
    if state.stopping:
        return None
    if not consumer():
        return 'it has died'
    silent = state.seconds_since_beat()
    return f'no turn for {silent:.0f}s' if silent > stuck_after else None


def health(state, deferred):
    """Each thread's state and the time.time() of the last scheduler pass
    (None before the first one, or without job stores)."""
    scheduler = deferred.threads()[0] if deferred is not None else None
    return {'threads': state.threads.report(),
            'last_scheduler_pass': getattr(scheduler, 'last_pass_at', None)}
