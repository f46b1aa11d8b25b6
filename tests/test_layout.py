"""The layout rules of the redesign, checked on the source (ast, no import).

See shared/reviews/architecture-2026-12.md, 5.1 and 5.2 step 0:

- import direction: the transports import nothing of the runtime, the
  facade or the admin commands; ``pyramid_scheduler`` never imports
  ``pscheduler``; ``pscheduler`` imports ``pyramid_scheduler`` only from the
  modules listed in :data:`PSCHEDULER_MAY_IMPORT` (the master never imports
  the application, nor what the application imports);
- module size: at most :data:`MAX_MODULE_LINES` lines;
- function size: at most :data:`MAX_FUNCTION_LINES` lines;
- class size: at most :data:`MAX_CLASS_LINES` lines.

The allowlists hold today's exceptions and may only shrink: an entry whose
module or function is gone, or now fits the limit, fails the test until it
is removed, so a split that lands is recorded here at once.
"""
import ast
import functools
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('pyramid_scheduler', 'pscheduler')

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250

# Modules over MAX_MODULE_LINES, by path from the repository root. Remove
# an entry once its module is split (the test says when).
OVERSIZE_MODULES = set()

# Functions over MAX_FUNCTION_LINES: 'path::qualname'.
OVERSIZE_FUNCTIONS = set()

# Classes over MAX_CLASS_LINES: 'path::qualname'.
OVERSIZE_CLASSES = set()

# The only pscheduler modules that may import pyramid_scheduler, and what
# from: the master process reads settings without importing the
# application; only the --message client speaks the admin protocol; the
# --run client (never imported by the master) loads the application and
# builds and sends a job as the facade does.
PSCHEDULER_MAY_IMPORT = {
    'pscheduler.config': {'pyramid_scheduler.settings',
                          'pyramid_scheduler.errors'},
    'pscheduler.message': {'pyramid_scheduler.admin'},
    'pscheduler.enqueue': {'pyramid_scheduler', 'pyramid_scheduler.naming',
                           'pyramid_scheduler.wire',
                           'pyramid_scheduler.errors',
                           'pyramid_scheduler.jobs'},
    # The process table and the metrics files (its format is the reader's).
    'pscheduler.statedir': {'pyramid_scheduler.daemonview'},
    'pscheduler.processtable': {'pyramid_scheduler.daemonview'},
    'pscheduler.metricsserver': {'pyramid_scheduler.daemonview'},
}

# What the transports must not know about: they are plumbing under both the
# producer and the runtime.
TRANSPORTS_MUST_NOT_IMPORT = ('pyramid_scheduler.runtime',
                              'pyramid_scheduler.scheduler',
                              'pyramid_scheduler.admin')


@functools.cache
def parsed(path):
    return ast.parse(path.read_text(encoding='utf-8'))


def source_files():
    for package in PACKAGES:
        yield from sorted((REPO_ROOT / package).rglob('*.py'))


def relative(path):
    return path.relative_to(REPO_ROOT).as_posix()


def module_name(path):
    parts = list(path.relative_to(REPO_ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def is_package(path):
    return path.name == '__init__.py'


def is_module(name):
    """Whether the dotted ``name`` is one of our modules or packages."""
    base = REPO_ROOT.joinpath(*name.split('.'))
    return base.with_suffix('.py').exists() or (base / '__init__.py').exists()


def imported_modules(path):
    """Every module ``path`` imports, at top level or in a function,
    absolute names (``from . import x`` resolved, ``from pkg import mod``
    as ``pkg.mod`` when mod is a module)."""
    tree = parsed(path)
    package = module_name(path).split('.')
    if not is_package(path):
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                origin = '.'.join(base + ([node.module] if node.module
                                          else []))
            else:
                origin = node.module
            for alias in node.names:
                submodule = f'{origin}.{alias.name}'
                # ``from pkg import mod`` imports pkg.mod; ``from pkg
                # import name`` takes a name from pkg itself.
                found.add(submodule if is_module(submodule) else origin)
    return found


def within(name, prefix):
    return name == prefix or name.startswith(prefix + '.')


def transport_modules():
    """The transports package, and today's transport modules until they
    move into it (afterwards they are re-export shims of it)."""
    for path in source_files():
        name = module_name(path)
        if within(name, 'pyramid_scheduler.transports') or name in (
                'pyramid_scheduler.sqlite_transport',
                'pyramid_scheduler.redis_transport',
                'pyramid_scheduler.redis_publish'):
            yield path


# --- import direction --------------------------------------------------------

@pytest.mark.parametrize('path', list(transport_modules()), ids=relative)
def test_transports_import_nothing_of_the_runtime_facade_or_admin(path):
    wrong = sorted(name for name in imported_modules(path)
                   if any(within(name, banned)
                          for banned in TRANSPORTS_MUST_NOT_IMPORT))
    assert wrong == [], f'{relative(path)} imports {wrong}'


def test_pyramid_scheduler_never_imports_pscheduler():
    wrong = {relative(path): sorted(
        name for name in imported_modules(path) if within(name, 'pscheduler'))
        for path in (REPO_ROOT / 'pyramid_scheduler').rglob('*.py')}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_pscheduler_imports_pyramid_scheduler_only_where_listed():
    found = {}
    for path in (REPO_ROOT / 'pscheduler').rglob('*.py'):
        ours = {name for name in imported_modules(path)
                if within(name, 'pyramid_scheduler')}
        allowed = PSCHEDULER_MAY_IMPORT.get(module_name(path), set())
        if ours - allowed:
            found[module_name(path)] = sorted(ours - allowed)
    assert found == {}, (
        'pscheduler modules importing pyramid_scheduler beyond '
        f'PSCHEDULER_MAY_IMPORT: {found}')


def test_the_listed_pscheduler_imports_exist():
    for importer, modules in PSCHEDULER_MAY_IMPORT.items():
        assert is_module(importer), f'{importer} is gone: update the list'
        for name in modules:
            assert is_module(name), f'{name} is gone: update the list'


# --- sizes -------------------------------------------------------------------

def module_lines(path):
    return len(path.read_text(encoding='utf-8').splitlines())


def test_no_module_is_over_the_line_limit_unless_allowlisted():
    over = sorted(relative(path) for path in source_files()
                  if module_lines(path) > MAX_MODULE_LINES)
    assert sorted(set(over) - OVERSIZE_MODULES) == [], (
        f'modules over {MAX_MODULE_LINES} lines: split them')


def test_the_module_allowlist_only_shrinks():
    stale = sorted(
        entry for entry in OVERSIZE_MODULES
        if not (REPO_ROOT / entry).exists()
        or module_lines(REPO_ROOT / entry) <= MAX_MODULE_LINES)
    assert stale == [], (
        f'{stale} are gone or now fit {MAX_MODULE_LINES} lines: remove them '
        'from OVERSIZE_MODULES in tests/test_layout.py')


def function_sizes(path):
    """``{'path::qualname': lines}`` of every function and method."""
    tree = parsed(path)
    sizes = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                sizes[f'{relative(path)}::{name}'] = (
                    child.end_lineno - child.lineno + 1)
                visit(child, name + '.')
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + '.')
            else:
                visit(child, prefix)
    visit(tree, '')
    return sizes


@functools.cache
def all_function_sizes():
    sizes = {}
    for path in source_files():
        sizes.update(function_sizes(path))
    return sizes


def test_no_function_is_over_the_line_limit_unless_allowlisted():
    over = {name: lines for name, lines in all_function_sizes().items()
            if lines > MAX_FUNCTION_LINES and name not in OVERSIZE_FUNCTIONS}
    assert over == {}, f'functions over {MAX_FUNCTION_LINES} lines: split them'


def test_the_function_allowlist_only_shrinks():
    sizes = all_function_sizes()
    stale = sorted(entry for entry in OVERSIZE_FUNCTIONS
                   if sizes.get(entry, 0) <= MAX_FUNCTION_LINES)
    assert stale == [], (
        f'{stale} are gone or now fit {MAX_FUNCTION_LINES} lines: remove '
        'them from OVERSIZE_FUNCTIONS in tests/test_layout.py')


def class_sizes(path):
    """``{'path::qualname': lines}`` of every class, nested ones too."""
    sizes = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                name = prefix + child.name
                sizes[f'{relative(path)}::{name}'] = (
                    child.end_lineno - child.lineno + 1)
                visit(child, name + '.')
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f'{prefix}{child.name}.<locals>.')
            else:
                visit(child, prefix)
    visit(parsed(path), '')
    return sizes


@functools.cache
def all_class_sizes():
    sizes = {}
    for path in source_files():
        sizes.update(class_sizes(path))
    return sizes


def test_no_class_is_over_the_line_limit_unless_allowlisted():
    over = {name: lines for name, lines in all_class_sizes().items()
            if lines > MAX_CLASS_LINES and name not in OVERSIZE_CLASSES}
    assert over == {}, f'classes over {MAX_CLASS_LINES} lines: split them'


def test_the_class_allowlist_only_shrinks():
    sizes = all_class_sizes()
    stale = sorted(entry for entry in OVERSIZE_CLASSES
                   if sizes.get(entry, 0) <= MAX_CLASS_LINES)
    assert stale == [], (
        f'{stale} are gone or now fit {MAX_CLASS_LINES} lines: remove '
        'them from OVERSIZE_CLASSES in tests/test_layout.py')
