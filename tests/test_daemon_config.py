"""How pscheduler reads an ini file: in-process, without the application."""
import sys

import pytest

from pscheduler import exitcodes
from pscheduler.config import load_config, require_daemon_mode
from pscheduler.exitcodes import ExitError


def write(path, text):
    path.write_text(text)
    return str(path)


def test_settings_are_read_without_importing_the_app(tmp_path):
    ini = write(tmp_path / 'app.ini', """\
[app:main]
use = call:pscheduler_test_never_imported:main
scheduler.queues = jobs mail
scheduler.housekeeping.append = pscheduler_test_never_imported:cleanup
scheduler.delegator = pscheduler_test_never_imported:delegate
""")
    config = load_config(ini)
    assert config.queues == ('jobs', 'mail')
    assert config.app_name == 'main'
    assert config.settings.database_path == str(tmp_path /
                                                'pscheduler.sqlite')
    assert 'pscheduler_test_never_imported' not in sys.modules


def test_a_pipeline_leads_to_its_app_section(tmp_path):
    ini = write(tmp_path / 'app.ini', """\
[pipeline:main]
pipeline = egg:Paste#translogger myapp

[app:myapp]
use = call:tests.apps.simple:main
scheduler.queues = reports
""")
    config = load_config(ini)
    assert (config.app_name, config.queues) == ('myapp', ('reports',))
    assert load_config(ini + '#myapp').app_name == 'myapp'


def test_a_missing_app_section_names_those_there_are(tmp_path):
    ini = write(tmp_path / 'app.ini', '[app:web]\nuse = call:x:main\n')
    with pytest.raises(ExitError) as info:
        load_config(ini, 'main')
    assert info.value.code == exitcodes.CONFIG
    assert 'no [app:main] section' in str(info.value)
    assert 'applications in it: web' in str(info.value)


def test_queue_option_keeps_the_ini_order_and_refuses_unknown(tmp_path):
    ini = write(tmp_path / 'app.ini',
                '[app:main]\nscheduler.queues = a b c\n')
    assert load_config(ini, only_queues=['c', 'a']).queues == ('a', 'c')
    with pytest.raises(ExitError) as info:
        load_config(ini, only_queues=['d'])
    assert info.value.code == exitcodes.USAGE
    assert 'a, b, c' in str(info.value)


def test_bad_setting_and_combined_mode_have_their_exit_codes(tmp_path):
    bad = write(tmp_path / 'bad.ini',
                '[app:main]\nscheduler.child.memory_limit = lots\n')
    with pytest.raises(ExitError) as info:
        load_config(bad)
    assert info.value.code == exitcodes.CONFIG
    assert 'scheduler.child.memory_limit' in str(info.value)

    combined = write(tmp_path / 'combined.ini',
                     '[app:main]\nscheduler.combined = true\n')
    with pytest.raises(ExitError) as info:
        require_daemon_mode(load_config(combined))
    assert info.value.code == exitcodes.COMBINED


def test_missing_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ExitError) as info:
        load_config(str(tmp_path / 'nope.ini'))
    assert info.value.code == exitcodes.CONFIG
    assert 'not found' in str(info.value)


def test_a_directory_is_not_an_ini_file(tmp_path):
    for directory in (tmp_path / 'conf', tmp_path / 'app.ini'):
        directory.mkdir()
        with pytest.raises(ExitError) as info:
            load_config(str(directory))
        assert info.value.code == exitcodes.CONFIG
        assert 'is a directory' in str(info.value)


@pytest.mark.parametrize('key, value, reason', [
    ('scheduler.broker.url', 'not a url', 'not a URL'),
    ('scheduler.broker.url', 'foo://host/', "no transport for 'foo'"),
    ('scheduler.broker.url', 'redis://127.0.0.1/abc', 'must be a number'),
    ('scheduler.database', '{file}/pscheduler.sqlite', 'is not a directory'),
    ('scheduler.jobstore.url', 'sqlite:///{file}/jobs.sqlite',
     'is not a directory'),
    ('scheduler.jobstore.url', 'nosuchdialect://host/db', 'no dialect'),
])
def test_settings_that_cannot_work_are_refused_before_forking(
        tmp_path, key, value, reason):
    regular_file = tmp_path / 'a-file'
    regular_file.write_text('')
    ini = write(tmp_path / 'app.ini', f"""\
[app:main]
use = call:pscheduler_test_never_imported:main
{key} = {value.format(file=regular_file)}
""")
    with pytest.raises(ExitError) as info:
        load_config(ini)
    assert info.value.code == exitcodes.CONFIG
    assert f'"{key}"' in str(info.value) and reason in str(info.value)


def test_broker_urls_kombu_reads_are_accepted(tmp_path):
    for url in ('redis://127.0.0.1:6379/1', 'redis://127.0.0.1',
                'redis+socket:///tmp/redis.sock', 'memory://',
                'pyamqp://guest:guest@127.0.0.1//;amqp://other//'):
        ini = write(tmp_path / 'app.ini', f"""\
[app:main]
use = call:pscheduler_test_never_imported:main
scheduler.broker.url = {url}
""")
        assert load_config(ini).settings.broker_url == url
