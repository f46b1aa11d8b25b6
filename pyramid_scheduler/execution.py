"""Calling a job's function the way a Pyramid view would run.

The function runs with Pyramid's threadlocals pointing at the application's
registry (so ``get_current_registry()`` works) and, when the ``transaction``
package is installed, inside ``transaction.manager``: it commits when the job
returns and aborts when it raises.
"""
import contextlib
import functools

from pyramid.threadlocal import manager as threadlocal_manager

from .references import check_allowed, resolve_reference


@contextlib.contextmanager
def app_threadlocals(registry):
    if registry is None:
        yield
        return
    threadlocal_manager.push({'registry': registry, 'request': None})
    try:
        yield
    finally:
        threadlocal_manager.pop()


@functools.cache
def _transaction_manager():
    """``transaction.manager``, or a no-op context if not installed; looked
    up once: an import statement per job costs more than the job."""
    try:
        import transaction
    except ImportError:
        return contextlib.nullcontext()
    return transaction.manager


def default_delegator(func, args, kwargs):
    return func(*args, **kwargs)


def run_job(spec, registry=None, delegator=None, allowed_modules=(),
            func=None):
    """Run one job; returns its result, raises what it raises.

    ``delegator`` (``scheduler.delegator``) is called as
    ``delegator(func, args, kwargs)`` instead of ``func(*args, **kwargs)``,
    to wrap every job (error reporting, a database session, ...). ``func``
    is the job's function when the caller has resolved and checked it
    already (an async job, just received); otherwise it is resolved here,
    after checking ``allowed_modules`` (a references.AllowedModules: a
    stored job is checked again at every run, against today's settings).
    """
    if func is None:
        check_allowed(spec['func'], allowed_modules)
        func = resolve_reference(spec['func'])
    call = delegator or default_delegator
    with app_threadlocals(registry):
        with _transaction_manager():
            return call(func, list(spec['args']), dict(spec['kwargs']))


def stored_job_marker(*args, **kwargs):
    """The function APScheduler stores for every deferred job.

    The job store keeps a reference to this function and the job's spec; the
    runtime's executor reads the spec and runs the real function, so this is
    never called by a correctly configured scheduler.
    """
    raise RuntimeError('pyramid_scheduler jobs run through the '
                       'pyramid_scheduler executor, not directly')
