"""README.rst's Settings section documents every key, as settings.OPTIONS
declares it: its default and its description, in the table's order.

When this fails, the message shows the entry that OPTIONS expects
(``Option.describe()``): paste it into README.rst, or fix the table.
"""
import dataclasses
import os
import re

import pytest

from pyramid_scheduler.settings import (
    KNOWN_KEYS, OPTIONS, PASS_THROUGH_PREFIXES, SchedulerSettings,
    parse_settings)

README = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                      'README.rst')
ENTRY_RE = re.compile(
    r'^``scheduler\.(?P<key>\S+)``(?: \(default: (?P<default>.*)\))?\n'
    r'(?P<help>(?:    .*\n?)+)', re.M)


def settings_section():
    with open(README, encoding='utf-8') as handle:
        text = handle.read()
    start = text.index('\nSettings\n========\n')
    end = text.index('\n=====', start + len('\nSettings\n========\n'))
    return text[start:end]


def readme_entries():
    """key -> (default as written, description with its line breaks
    folded), in the README's order."""
    return {match['key']: (match['default'], ' '.join(match['help'].split()))
            for match in ENTRY_RE.finditer(settings_section())}


@pytest.mark.parametrize('option', OPTIONS, ids=lambda option: option.key)
def test_readme_documents_the_key_with_its_default(option):
    entries = readme_entries()
    expected = option.describe()
    assert option.key in entries, (
        f'README.rst does not document scheduler.{option.key}; add:\n'
        f'{expected}')
    default, help_text = entries[option.key]
    assert (default, help_text) == (option.documented_default,
                                    ' '.join(option.help.split())), (
        f'README.rst and settings.OPTIONS disagree; OPTIONS says:\n'
        f'{expected}')


def test_readme_lists_the_keys_in_the_order_of_the_table():
    documented = [key for key in readme_entries() if key in KNOWN_KEYS]
    assert documented == list(KNOWN_KEYS)


def test_readme_documents_no_key_that_does_not_exist():
    # Besides the table's keys: the per-queue keys and pass-through prefixes.
    others = [key for key in readme_entries() if key not in KNOWN_KEYS]
    assert others == ['queue.NAME.jobstore.*', 'queue.NAME.executor.size',
                      'queue.NAME.processes', 'apscheduler.*']
    assert all(key.startswith(PASS_THROUGH_PREFIXES) for key in others)


@pytest.mark.parametrize('option', [o for o in OPTIONS
                                    if o.field and o.default is not None],
                         ids=lambda option: option.key)
def test_a_documented_default_is_the_value_of_an_absent_key(option, tmp_path):
    absent = parse_settings({}, here=str(tmp_path))
    given = parse_settings({f'scheduler.{option.key}': option.default},
                           here=str(tmp_path))
    assert getattr(absent, option.field) == getattr(given, option.field)


def test_every_settings_field_comes_from_the_table_or_a_section():
    from_options = {option.field for option in OPTIONS if option.field}
    from_sections = {'queues', 'queue_settings', 'database_path',
                     'broker_url', 'embedded', 'jobstore_url',
                     'jobstore_options', 'secrets', 'apscheduler_options',
                     'allowed_modules'}
    fields = {field.name for field in dataclasses.fields(SchedulerSettings)}
    assert from_options | from_sections == fields
    assert not from_options & from_sections


@pytest.mark.parametrize('option', OPTIONS, ids=lambda option: option.key)
def test_describe_renders_an_entry_this_test_reads_back(option):
    [match] = ENTRY_RE.finditer(option.describe())
    assert match['key'] == option.key
    assert match['default'] == option.documented_default
    assert ' '.join(match['help'].split()) == ' '.join(option.help.split())
