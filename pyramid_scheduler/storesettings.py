"""The job store settings of each queue, and the check that no two
queues share a store.

``scheduler.jobstore.default.class`` names an APScheduler job store class,
built once per queue with ``scheduler.jobstore.default.*`` as arguments,
``{queue}`` and ``{id}`` in their text replaced, and
``scheduler.queue.NAME.jobstore.*`` over them for one queue. Like the rest
of the settings, this works on plain values, so the pscheduler master can
check it without importing the application (the class is a dotted name
there).
"""
import logging

from pyramid.exceptions import ConfigurationError

from .values import PREFIX

log = logging.getLogger(__name__)


def default_jobstore_options(conf):
    """``jobstore.default.*``: the class's arguments for every queue (the
    class itself is an option)."""
    return {key[len('jobstore.default.'):]: value
            for key, value in conf.items()
            if key.startswith('jobstore.default.')
            and key != 'jobstore.default.class'}


def queue_jobstore_options(conf, queue):
    """``queue.NAME.jobstore.*`` as (name, value) pairs."""
    prefix = f'queue.{queue}.jobstore.'
    options = tuple((key[len(prefix):], value) for key, value in conf.items()
                    if key.startswith(prefix))
    for name, _ in options:
        if name == 'class':
            raise ConfigurationError(
                f'setting "{PREFIX}{prefix}class": the job store class is '
                f'the same for every queue ("{PREFIX}jobstore.default.'
                f'class"); give this queue its own arguments instead')
    return options


# Placeholders in the text of job store arguments.
QUEUE_PLACEHOLDER = '{queue}'
ID_PLACEHOLDER = '{id}'


def jobstore_arguments(default_options, queue_options, queue, scheduler_id):
    """The arguments of one queue's store: the queue's own over the
    default ones, placeholders replaced."""
    arguments = dict(default_options)
    arguments.update(queue_options)
    return {name: fill_placeholders(value, queue, scheduler_id)
            for name, value in arguments.items()}


def fill_placeholders(value, queue, scheduler_id):
    if not isinstance(value, str):
        return value
    return value.replace(QUEUE_PLACEHOLDER, queue).replace(
        ID_PLACEHOLDER, scheduler_id)


# APScheduler's store that keeps jobs in the memory of each process: two
# queues never share one (their jobs are lost at every restart).
IN_PROCESS_STORES = ('apscheduler.jobstores.memory:MemoryJobStore',
                     'apscheduler.jobstores.memory.MemoryJobStore')


def check_stores_apart(settings, conf):
    """Refuse job store settings under which two queues share a store.

    Every queue's runtime owns its store (see runtime.storelock): two queues
    reading one table run each other's jobs, in the wrong process, a date
    job twice. The built-in store has a table per queue; a custom class
    gets the arguments it is given, so two queues must be given different
    ones (``{queue}`` in an argument, or ``queue.NAME.jobstore.*``). Done
    on the text of the settings, so the pscheduler master, which imports
    no application code, refuses it before forking.
    """
    store_class = settings.jobstore_class
    if store_class is None:
        _refuse_options_without_class(settings, conf)
        return
    if _keeps_jobs_in_process(store_class):
        return
    seen = {}
    for queue in settings.queues:
        arguments = settings.jobstore_arguments(queue)
        shared = next((other for other, known in seen.items()
                       if known == arguments), None)
        if shared is not None:
            raise ConfigurationError(
                f'setting "{PREFIX}jobstore.default.class": queues {shared} '
                f'and {queue} would share one job store (the same arguments: '
                f'{_shown(arguments)}), and run each other\'s jobs. Give '
                f'each queue a store of its own: {{queue}} in an argument '
                f'(e.g. "{PREFIX}jobstore.default.tablename = '
                f'{{id}}_{{queue}}_jobs" for a SQLAlchemyJobStore), or '
                f'"{PREFIX}queue.NAME.jobstore.ARGUMENT" for one queue')
        seen[queue] = arguments


def _keeps_jobs_in_process(store_class):
    if isinstance(store_class, str):
        return store_class.strip() in IN_PROCESS_STORES
    from apscheduler.jobstores.memory import MemoryJobStore
    return store_class is MemoryJobStore


def _refuse_options_without_class(settings, conf):
    # The built-in store takes no arguments (its URL is jobstore.url).
    for queue in settings.queues:
        for name, _ in settings.queue_settings[queue].jobstore_options:
            raise ConfigurationError(
                f'setting "{PREFIX}queue.{queue}.jobstore.{name}": '
                f'job store arguments need "{PREFIX}jobstore.default.class" '
                f'(the built-in store has a table per queue already; its '
                f'URL is "{PREFIX}jobstore.url")')
    for key in conf:
        if key.startswith('jobstore.default.') and \
                key != 'jobstore.default.class':
            log.warning('setting "%s%s" is ignored: job store arguments '
                        'are for "%sjobstore.default.class"', PREFIX, key,
                        PREFIX)


def _shown(arguments):
    # Names only: a value may be a password.
    return ', '.join(sorted(arguments)) or 'none'
