"""Job functions by name: ``module:qualname`` references and what may run.

A job names its function as text, so that the process that runs it can find
it again; the producer checks the reference resolves to the very function it
was given, and both ends refuse what is outside ``scheduler.allowed_modules``.
"""
import importlib
import inspect

from .errors import InvalidJob


def func_reference(func):
    """``module:qualname`` of a module-level function, or InvalidJob."""
    if isinstance(func, str):
        return _reference_from_string(func)
    if not inspect.isfunction(func):
        raise InvalidJob(
            f'{func!r} cannot be scheduled: jobs must be plain module-level '
            'functions (not methods, builtins, classes or callable objects); '
            'wrap it in a function defined at the top of a module')
    module, qualname = func.__module__, func.__qualname__
    if '<lambda>' in qualname or '<locals>' in qualname:
        raise InvalidJob(
            f'{module}.{qualname} cannot be scheduled: lambdas and nested '
            'functions cannot be found again by name in the process that '
            'runs the job; define it at the top level of a module')
    if module == '__main__':
        raise InvalidJob(
            f'{qualname} is defined in __main__, which the scheduler process '
            'cannot import; move it into an importable module')
    ref = f'{module}:{qualname}'
    try:
        found = resolve_reference(ref)
    except InvalidJob:
        found = None
    if found is not func:
        raise InvalidJob(
            f'{module}.{qualname} cannot be scheduled: importing {ref} does '
            'not give back the same function (is it decorated, or replaced '
            'at import time?); schedule a module-level function')
    return ref


def _reference_from_string(text):
    ref = text.strip()
    if ':' not in ref:
        module, _, name = ref.rpartition('.')
        if not module:
            raise InvalidJob(f'{text!r} is not a function reference; use '
                             '"package.module:function"')
        ref = f'{module}:{name}'
    if not callable(resolve_reference(ref)):
        raise InvalidJob(f'{ref} is not callable')
    return ref


def resolve_reference(ref):
    """The object named by ``module:qualname``, or InvalidJob saying why."""
    module_name, _, qualname = ref.partition(':')
    try:
        obj = importlib.import_module(module_name)
    except Exception as exc:
        raise InvalidJob(f'cannot import module {module_name!r} of job '
                         f'function {ref}: {exc}') from exc
    for part in qualname.split('.'):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise InvalidJob(f'module {module_name!r} has no function '
                             f'{qualname!r} (job function {ref})') from None
    return obj


def _in_modules(module, allowed_modules):
    return isinstance(module, str) and any(
        module == prefix.rstrip('.') or module.startswith(
            prefix.rstrip('.') + '.') for prefix in allowed_modules)


def check_allowed(ref, allowed_modules):
    """Refuse functions outside ``scheduler.allowed_modules`` (when set).

    The module is checked before it is imported; then what the reference
    names must be defined in an allowed module too, so that a path through
    an allowed module's imports (``myapp.tasks:os.system``) is refused.
    """
    if not allowed_modules:
        return
    if _in_modules(ref.partition(':')[0], allowed_modules):
        defined_in = getattr(resolve_reference(ref), '__module__', None)
        if _in_modules(defined_in, allowed_modules):
            return
        where = f'; it is defined in {defined_in!r}' if isinstance(
            defined_in, str) else ''
    else:
        where = ''
    raise InvalidJob(
        f'{ref} is outside the modules allowed to be scheduled '
        f'({", ".join(allowed_modules)}){where}; add its module to the '
        'setting "scheduler.allowed_modules"')
