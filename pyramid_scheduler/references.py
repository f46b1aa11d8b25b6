"""Job functions by name: ``module:qualname`` references and what may run.

A job names its function as text, so that the process that runs it can find
it again; the producer checks the reference resolves to the very function it
was given. What may run at all is :class:`AllowedModules`: the application's
own package and ``scheduler.allowed_modules``, nothing else by default. Both
ends check it (when a job is added, when its message arrives, before each
run), because a message on the broker may have been written by anyone who
can reach the broker, not by the application.
"""
import dataclasses
import importlib
import inspect
import re

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


# ``scheduler.allowed_modules = *``: any module (the old behaviour, minus
# GUARDED_MODULES). Dangerous: every function of every installed library
# becomes a job anyone who can write to the broker can run.
ANY_MODULE = '*'

# Refused even under an allowed prefix (the app's package, a broad entry,
# ``*``) unless ``scheduler.allowed_modules`` names the module itself (or a
# module inside it): with one call and arguments of the caller's choosing,
# a function of these runs a command or arbitrary code, imports a module,
# reads or writes any file, opens a connection, or kills the process. No
# job needs them through a message; an app that does says so by name.
# It is a safety net under a too broad allow-list, not a sandbox: with
# ``*``, third-party libraries hold such functions too.
GUARDED_MODULES = frozenset({
    # running code, importing it, or unpickling it
    'builtins', '__main__', 'importlib', 'imp', 'zipimport', 'pkgutil',
    'runpy', 'code', 'codeop', 'pdb', 'bdb', 'timeit', 'profile', 'cProfile',
    'trace', 'doctest', 'pydoc', 'site', 'sys', 'ctypes', '_ctypes',
    'pickle', '_pickle', 'marshal', 'shelve', 'copyreg', 'logging.config',
    'antigravity',  # importing it opens a web browser
    # processes and signals
    'os', 'posix', 'nt', 'subprocess', '_posixsubprocess', 'pty',
    'multiprocessing', 'concurrent', 'signal', '_signal', '_thread',
    'resource', 'faulthandler', 'webbrowser',
    # files
    'io', '_io', 'codecs', 'fileinput', 'shutil', 'tempfile', 'pathlib',
    'glob', 'fcntl', 'mmap', 'tarfile', 'zipfile', 'gzip', 'bz2', 'lzma',
    'sqlite3', 'dbm',
    # the network
    'socket', '_socket', 'ssl', 'socketserver', 'http', 'urllib', 'ftplib',
    'smtplib', 'telnetlib', 'xmlrpc',
})

# A dotted module name; a trailing dot (``myapp.``) was always accepted.
_MODULE_NAME = re.compile(r'[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.?', re.ASCII)


def _under(module, prefix):
    return module == prefix or module.startswith(prefix + '.')


def valid_module_entry(entry):
    """Whether ``entry`` may stand in ``scheduler.allowed_modules``."""
    return entry == ANY_MODULE or bool(_MODULE_NAME.fullmatch(entry))


@dataclasses.dataclass(frozen=True)
class AllowedModules:
    """Which modules' functions may run as jobs.

    ``app_package`` is the Pyramid configurator's package (known to the web
    app and to the pscheduler child, which loads the app through the same
    include; None for a Scheduler built by hand), ``modules`` the entries of
    ``scheduler.allowed_modules``: dotted prefixes (``myapp.jobs`` allows
    ``myapp.jobs.mail`` too), or ``*`` for any module. A module of
    GUARDED_MODULES is allowed only by an entry naming it or a module inside
    it. Nothing else is allowed: the default is to deny.
    """
    modules: tuple = ()
    app_package: str = None

    @classmethod
    def of(cls, allowed):
        """``allowed`` as an AllowedModules: one already, or a sequence of
        ``scheduler.allowed_modules`` entries (None or empty: none)."""
        if isinstance(allowed, cls):
            return allowed
        return cls(modules=tuple(allowed or ()))

    @property
    def prefixes(self):
        entries = tuple(entry.rstrip('.') for entry in self.modules)
        if self.app_package:
            entries = (self.app_package,) + entries
        return entries

    def allows(self, module):
        """Whether functions of ``module`` (a dotted name) may run."""
        if not isinstance(module, str) or not module:
            return False
        prefixes = self.prefixes
        covering = [prefix for prefix in prefixes
                    if prefix == ANY_MODULE or _under(module, prefix)]
        if not covering:
            return False
        guard = _guard_of(module)
        if guard is None:
            return True
        # Only an entry at or inside the guarded module lifts the guard:
        # "os" does, "*" and the app's package do not.
        return any(prefix != ANY_MODULE and _under(prefix, guard)
                   for prefix in covering)

    def describe(self):
        """What is allowed, for error messages."""
        shown = [f"the application's package {self.app_package}"] \
            if self.app_package else []
        shown += [entry for entry in self.modules]
        return ', '.join(shown) or 'nothing'


def _guard_of(module):
    """The GUARDED_MODULES entry ``module`` is (or is inside), or None."""
    parts = module.split('.')
    for end in range(1, len(parts) + 1):
        name = '.'.join(parts[:end])
        if name in GUARDED_MODULES:
            return name
    return None


def check_allowed(ref, allowed_modules):
    """Refuse a job function its :class:`AllowedModules` does not allow.

    The reference's module is checked before it is imported (importing
    runs the module's code); then what the reference names must be defined
    in an allowed module too, so that a path through an allowed module's
    imports (``myapp.tasks:os.system``) is refused. ``allowed_modules`` is
    an AllowedModules, or a sequence of ``scheduler.allowed_modules``
    entries without an application package.
    """
    allowed = AllowedModules.of(allowed_modules)
    if not isinstance(ref, str) or ':' not in ref:
        raise InvalidJob(f'job function {ref!r:.100} is not a '
                         '"module:function" reference')
    module = ref.partition(':')[0]
    if not allowed.allows(module):
        raise InvalidJob(_refusal(ref, module, allowed))
    defined_in = getattr(resolve_reference(ref), '__module__', None)
    if not allowed.allows(defined_in):
        where = (f'it is defined in {defined_in!r}, ' if isinstance(
            defined_in, str) else 'it is not a function defined in a module, ')
        raise InvalidJob(f'{ref} is refused: {where}not in the modules '
                         f'allowed to run jobs ({allowed.describe()}); add '
                         'its module to the setting '
                         '"scheduler.allowed_modules"')


def _refusal(ref, module, allowed):
    guard = _guard_of(module) if module else None
    if guard is not None and any(
            prefix == ANY_MODULE or _under(module, prefix)
            for prefix in allowed.prefixes):
        return (f'{ref} is refused: {guard} can run commands or code, '
                'import modules, touch files or the network; name the '
                'module itself in the setting "scheduler.allowed_modules" '
                'if a job really needs it')
    return (f'{ref} is outside the modules allowed to run jobs '
            f'({allowed.describe()}); add its module to the setting '
            '"scheduler.allowed_modules"')


class AllowedFunctions:
    """The job functions that may run, by reference, remembered once
    checked: what a runtime's dispatcher asks for every async job.

    :meth:`get` refuses a function :func:`check_allowed` refuses (before
    its module is even imported), and one that does not import or is not
    callable. An allowed one is remembered: the settings and the modules
    imported do not change while a runtime runs, and checking and
    resolving the same reference again for every message was a large part
    of the consumer thread's time. A refused reference is never
    remembered (a flood of forged ones must not fill memory), and the
    memory is bounded all the same.
    """

    MAX_REMEMBERED = 1000

    def __init__(self, allowed_modules):
        self.allowed_modules = allowed_modules
        self._functions = {}

    def get(self, ref):
        """The function ``ref`` names, if it may run; else InvalidJob."""
        func = self._functions.get(ref) if isinstance(ref, str) else None
        if func is not None:
            return func
        check_allowed(ref, self.allowed_modules)
        func = resolve_reference(ref)
        if not callable(func):
            raise InvalidJob(f'job function {ref} is not callable')
        if len(self._functions) >= self.MAX_REMEMBERED:
            self._functions.clear()
        self._functions[ref] = func
        return func
