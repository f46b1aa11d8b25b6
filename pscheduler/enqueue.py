"""``pscheduler --run FUNC [--args JSON] [--kwargs JSON] app.ini``: one job.

Sends one async job, as ``request.registry.scheduler.add_async_job`` would,
from a shell, a cron line or a deployment script, and prints its id on
stdout (one line, for ``JOB=$(pscheduler --run ...)``).

The application is loaded (as ``pshell`` and a pscheduler child do), for
the same validation as in the web app: its Configurator's package may run
jobs without being listed in ``scheduler.allowed_modules``, and only the
loaded application knows it. The job then goes through ``build_spec``
(default-deny, the arguments' round trip through the serializer, the
queue) and is published at once: there is no transaction to join, so the
web side's outbox does not apply; when this command exits 0 the broker has
the job (RabbitMQ confirmed it, the embedded SQLite committed it), and
otherwise it says why and exits non-zero.
"""
import json
import os

from pyramid.exceptions import ConfigurationError
from pyramid_scheduler import CONSUME_ENV, naming, wire
from pyramid_scheduler.errors import InvalidJob, InvalidQueue
from pyramid_scheduler.jobs import build_spec

from . import exitcodes
from .child import configuration_error, one_line
from .config import get_loader, load_config
from .exitcodes import ExitError
from .message import send_failure

ARGS_EXAMPLE = '--args \'["x", 2]\''
KWARGS_EXAMPLE = '--kwargs \'{"a": 1}\''


def run(args, out):
    """Send the job ``args`` (the parsed command line) describe; print its
    id on ``out``; exit code. Errors are ExitError."""
    job_args = parse_json(args.args, '--args', list, 'a JSON list',
                          ARGS_EXAMPLE)
    job_kwargs = parse_json(args.kwargs, '--kwargs', dict, 'a JSON object',
                            KWARGS_EXAMPLE)
    queue = single_queue(args.queues)
    # Checks the ini and the --queue before the application is loaded.
    config = load_config(args.config_uri, args.app_name, args.queues,
                         args.loader)
    scheduler = load_scheduler(config)
    try:
        job_id = send_job(scheduler, args.run, job_args, job_kwargs, queue,
                          args.job_id)
    finally:
        scheduler.shutdown()
    print(job_id, file=out)
    return exitcodes.OK


def parse_json(text, option, kind, expected, example):
    """The value of a JSON option, of type ``kind``; empty if not given."""
    if text is None:
        return kind()
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ExitError(f'{option} is not valid JSON ({exc}); give '
                        f'{expected}, e.g. {example}',
                        exitcodes.USAGE) from exc
    if not isinstance(value, kind):
        raise ExitError(f'{option} must be {expected}, e.g. {example}, not '
                        f'{text.strip()!r}', exitcodes.USAGE)
    return value


def single_queue(queues):
    """The one ``--queue`` of a job (None: the default queue)."""
    if len(queues) > 1:
        raise ExitError(f'--run sends the job to one queue, not '
                        f'{len(queues)} ({", ".join(queues)}): give --queue '
                        'once, or run the command once per queue',
                        exitcodes.USAGE)
    return queues[0] if queues else None


def load_scheduler(config):
    """The loaded application's ``registry.scheduler``, or ExitError."""
    # This process sends one job and exits: it must never run jobs, even
    # if the application is combined and the environment says =1.
    os.environ[CONSUME_ENV] = '0'
    where = f'the application [app:{config.app_name}] of {config.ini_path}'
    try:
        app = get_loader(config.config_uri).get_wsgi_app(config.app_name)
    except ConfigurationError as exc:
        raise ExitError(f'{where} is misconfigured: '
                        f'{configuration_error(exc)}',
                        exitcodes.CONFIG) from exc
    except Exception as exc:
        # Not pscheduler's failure (exit 1): what the ini names does not
        # load (an import error, most often), and no retry will fix it.
        raise ExitError(f'{where} could not be loaded: '
                        f'{type(exc).__name__}: {one_line(exc)}',
                        exitcodes.CONFIG) from exc
    scheduler = getattr(getattr(app, 'registry', None), 'scheduler', None)
    if scheduler is None or scheduler.settings is None:
        raise ExitError(
            f'{where} does not include pyramid_scheduler: add '
            '"config.include(\'pyramid_scheduler\')" to its main()',
            exitcodes.NO_SCHEDULER)
    return scheduler


def send_job(scheduler, func, args, kwargs, queue, job_id):
    """Validate and publish an async job, as ``Scheduler.add_async_job``
    does but never through a transaction's outbox; its id."""
    settings = scheduler.settings
    try:
        queue, spec = build_spec(settings, 'async', func, args, kwargs,
                                 queue, options={'id': job_id})
    except (InvalidJob, InvalidQueue) as exc:
        raise ExitError(f'--run {func}: {exc}', exitcodes.USAGE) from exc
    target = naming.job_queue(settings, queue)
    try:
        scheduler.producer.publish(wire.job_created(queue, spec),
                                   target.name, declare=[target])
    except Exception as exc:
        raise ExitError(f'the job was not sent: '
                        f'{send_failure(settings, exc)}',
                        exitcodes.NO_ANSWER) from exc
    return spec['id']
