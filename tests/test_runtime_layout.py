"""The runtime package's shape: calls go one way, modules and classes stay
small. Read from the source (ast), nothing is imported or run.

``Runtime`` (runtime/__init__) composes the parts and is the only one that
knows them all; a part imports only the siblings listed below (the others
it is given), never the package root, so no call goes back up.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).parent.parent / 'pyramid_scheduler'
RUNTIME = PACKAGE / 'runtime'

# runtime/<module> -> the sibling modules it may import.
SIBLINGS = {
    'acks': set(),
    'apscheduling': set(),
    'consumer': set(),
    'crashes': set(),
    'deferred': {'apscheduling', 'dueruns', 'walcheckpoint'},
    'dispatch': {'crashes', 'jobmessages'},
    'jobmessages': set(),
    'dueruns': set(),
    'figures': set(),
    'inline': set(),
    'introspection': {'jobsearch'},
    'jobsearch': set(),
    'jobrunner': set(),
    'liveness': set(),
    'metrics': set(),
    'outbox': set(),
    'presence': set(),
    'received': set(),
    'records': set(),
    'retries': set(),
    'state': set(),
    'storelock': {'advisorylock', 'leaselock'},
    'leaselock': {'storelock'},
    'advisorylock': {'storelock'},
    'timelimits': set(),
    'walcheckpoint': set(),
    'workers': set(),
}
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250


def imports_of(path):
    """``(level, module, names)`` of every import in the file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.level, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name, []


def sibling_imports(path):
    """The runtime modules a runtime module imports (root included)."""
    found = set()
    for level, module, names in imports_of(path):
        absolute = level == 0 and module and module.startswith(
            'pyramid_scheduler.runtime')
        if absolute:
            rest = module.split('.')[2:]
            found.add(rest[0] if rest else '__init__')
        elif level == 1:
            found.update([module.split('.')[0]] if module else names)
        elif level == 2 and (module or '').startswith('runtime'):
            rest = module.split('.')[1:]
            found.add(rest[0] if rest else '__init__')
        elif level == 2 and module is None and 'runtime' in names:
            found.add('__init__')
    return found


def test_every_runtime_module_is_listed():
    modules = {p.stem for p in RUNTIME.glob('*.py')} - {'__init__'}
    assert modules == set(SIBLINGS)


@pytest.mark.parametrize('module', sorted(SIBLINGS))
def test_a_runtime_part_imports_only_what_is_below_it(module):
    imported = sibling_imports(RUNTIME / f'{module}.py')
    assert imported <= SIBLINGS[module], (
        f'runtime/{module}.py imports {sorted(imported - SIBLINGS[module])}')


def test_codec_admin_and_the_rest_never_import_the_runtime():
    for path in PACKAGE.rglob('*.py'):
        if RUNTIME in path.parents or path.name == 'scheduler.py':
            continue   # scheduler.make_runtime builds it (lazily)
        for level, module, names in imports_of(path):
            target = f'{"." * level}{module or ""}'
            assert 'runtime' not in target.split('.') and \
                'runtime' not in names, f'{path} imports {target} {names}'


@pytest.mark.parametrize('path', sorted(
    [*RUNTIME.glob('*.py'), *(PACKAGE / 'admin').glob('*.py'),
     PACKAGE / 'codec.py']), ids=lambda p: f'{p.parent.name}/{p.name}')
def test_modules_and_classes_stay_small(path):
    source = path.read_text()
    assert source.count('\n') <= MAX_MODULE_LINES
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef):
            lines = node.end_lineno - node.lineno + 1
            assert lines <= MAX_CLASS_LINES, f'{node.name}: {lines} lines'
