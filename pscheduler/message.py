"""``pscheduler --message TEXT app.ini``: admin commands to running children.

TEXT is a command and optional ``key=value`` arguments, e.g. ``ping``,
``status`` or ``jobs offset=50 limit=10``; ``requeue`` also takes its one
argument as a bare word (``requeue ID`` is ``requeue id=ID``; an id with
``=`` in it is given as ``id=...``). The command goes to every served
queue (or those given with ``--queue``) through the broker; each child
answers on a private reply queue. Answers are printed on stdout, readable by
people or, with ``--json``, by programs; problems go to stderr.

``print-jobs`` keeps its 0.3 behaviour: each child logs its job store (look
in the daemon's log); the command line says which children did.

The arguments of the known commands are checked here, before anything is
sent: a typo or a value out of range is exit code 2 with the reason, not a
silently ignored argument or a child's ValueError. Other commands go to the
children's listeners (MESSAGE events) with whatever arguments they carry.
"""
import errno
import json
import os
import sqlite3
import sys
import time
import types

from pyramid_scheduler.admin import COMMANDS, send_command

from . import exitcodes
from .daemonreport import daemons_of, format_daemon
from .sizes import format_size


# Known command -> {argument: (least, most) of a whole number (None:
# unbounded), or str for text}.
COMMAND_ARGUMENTS = types.MappingProxyType({
    'print-jobs': {'limit': (1, None)},
    'ping': {},
    'status': {},
    'jobs': {'offset': (0, None), 'limit': (1, 1000), 'search': str},
    'job': {'id': str},
    'dead-letters': {},
    'purge-dead-letters': {},
    'requeue-dead-letters': {'limit': (1, 10000)},
    'failed': {'limit': (1, 1000)},
    'requeue': {'id': str},
    'purge-failed': {},
})
# Commands whose answers carry the whole daemon (pscheduler.daemonreport).
DAEMON_COMMANDS = ('status', 'ping')
# Command -> the argument a bare word gives it (``requeue ID``).
BARE_ARGUMENT = types.MappingProxyType({'requeue': 'id', 'job': 'id'})
# Command -> the arguments it cannot go without.
REQUIRED_ARGUMENTS = types.MappingProxyType({'requeue': ('id',),
                                            'job': ('id',)})


def parse_message(text):
    """``'jobs offset=5'`` -> ``('jobs', {'offset': 5})``; ValueError
    saying what is wrong."""
    words = text.split()
    if not words:
        raise ValueError('--message needs a command, e.g. "ping"; known '
                         f'commands: {", ".join(COMMANDS)}')
    name, args = words[0], {}
    for word in words[1:]:
        key, sep, value = word.partition('=')
        if not sep and name in BARE_ARGUMENT:
            key, value = BARE_ARGUMENT[name], word
        elif not sep or not key:
            raise ValueError(f'--message argument {word!r} is not key=value')
        if key in args:
            raise ValueError(f'--message argument {key!r} is given twice')
        args[key] = value
    return name, check_arguments(name, args)


def check_arguments(name, args):
    """Refuse what a known command would ignore or fail on; the arguments
    as the command takes them (whole numbers as int)."""
    known = COMMAND_ARGUMENTS.get(name)
    if known is None:   # for the listeners: numbers as numbers
        return {key: int(value) if value.lstrip('-').isdigit() else value
                for key, value in args.items()}
    for key in args:
        if key not in known:
            takes = (f'its arguments: {", ".join(known)}' if known
                     else 'it takes none')
            raise ValueError(f'{name!r} has no argument {key!r} ({takes})')
    for key in REQUIRED_ARGUMENTS.get(name, ()):
        if not args.get(key):
            usage = f'"{name} {key}={key.upper()}"' + (
                f' or "{name} {key.upper()}"'
                if BARE_ARGUMENT.get(name) == key else '')
            raise ValueError(f'{name!r} needs {key}: {usage}')
    return {key: value if known[key] is str
            else whole_number(name, key, value, *known[key])
            for key, value in args.items()}


def whole_number(name, key, value, least, most):
    number = int(value) if value.lstrip('-').isdigit() else None
    if number is None or number < least or (
            most is not None and number > most):
        bounds = (f'from {least} to {most}' if most is not None
                  else f'{least} or more')
        raise ValueError(f'{name} {key}={value}: expected a whole '
                         f'number, {bounds}')
    return number


def run(config, text, timeout=None, as_json=False, out=None, err=None):
    """Send ``text`` to the children of ``config``; print; exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        name, args = parse_message(text)
    except ValueError as exc:
        print(f'pscheduler: error: {exc}', file=err)
        return exitcodes.USAGE
    timeout = config.settings.admin_timeout if timeout is None else timeout
    try:
        replies, missing = send_command(config.settings, name, config.queues,
                                        args=args or None, timeout=timeout)
    except Exception as exc:
        print(f'pscheduler: error: {name!r} was not sent: '
              f'{send_failure(config.settings, exc)}', file=err)
        return exitcodes.NO_ANSWER
    replies.sort(key=lambda reply: config.queues.index(reply['queue'])
                 if reply['queue'] in config.queues else len(config.queues))
    problem = requeue_problem(name, args, replies, missing, config.queues)
    daemons = daemons_of(replies) if name in DAEMON_COMMANDS else []
    if as_json:
        json.dump({'command': name, 'args': args, 'replies': replies,
                   'missing': list(missing), 'daemons': daemons}, out,
                  indent=2, sort_keys=True)
        out.write('\n')
    else:
        for reply in replies:
            print(format_reply(name, reply), file=out)
        for daemon in daemons:
            print(format_daemon(daemon, format_duration,
                                brief=name == 'ping'), file=out)
    if problem:
        print(f'pscheduler: {problem}', file=err)
        return exitcodes.COMMAND_ERROR
    return report_problems(name, replies, missing, timeout, err)


def requeue_problem(name, args, replies, missing, queues):
    """Why a ``requeue`` that every child answered without an error did
    nothing: the job's queue is not among those asked (``--queue``)."""
    if name != 'requeue' or missing or any(r.get('error') for r in replies):
        return None
    if any((r.get('result') or {}).get('requeued') for r in replies):
        return None
    return (f'job {args["id"]} was not requeued: its queue is not among '
            f'the queue(s) asked ({", ".join(queues)}); see --queue')


# Less free space than this beside the embedded database, and SQLite failing:
# the disk is full (SQLite says "disk I/O error" when it cannot grow its
# shared-memory file, not "full").
FULL_DISK_BYTES = 64 * 1024


def send_failure(settings, exc):
    """Why the command could not be sent, on one line: a full disk says
    so, not "could not be reached" (the embedded broker is a file)."""
    cause = exc
    while cause is not None:
        if is_disk_full(settings, cause):
            where = (settings.database_path if settings.embedded
                     else 'the broker')
            return (f'the disk holding {where} is full ({cause}); free '
                    'some space')
        cause = cause.__cause__ or cause.__context__
    return ' '.join(f'{type(exc).__name__}: {exc}'.split())


def is_disk_full(settings, exc):
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    if 'disk is full' in str(exc):
        return True
    return settings.embedded and free_bytes(
        os.path.dirname(settings.database_path)) < FULL_DISK_BYTES


def free_bytes(directory):
    try:
        stats = os.statvfs(directory)
    except OSError:
        return float('inf')  # cannot tell: do not claim it is full
    return stats.f_bavail * stats.f_frsize


def report_problems(name, replies, missing, timeout, err):
    errors = [reply for reply in replies if reply.get('error')]
    if errors:
        print(f'pscheduler: {name!r} failed on queue(s) '
              f'{", ".join(reply["queue"] for reply in errors)}: '
              f'{errors[0]["error"]}', file=err)
    if missing:
        hint = '' if name in COMMANDS else (
            f' ({name!r} is not a known command: '
            f'{", ".join(COMMANDS)})')
        print(f'pscheduler: no answer to {name!r} from queue(s) '
              f'{", ".join(missing)} within {timeout:g}s: is pscheduler '
              f'running for them?{hint}', file=err)
        return exitcodes.NO_ANSWER
    if errors:
        return exitcodes.COMMAND_ERROR
    return exitcodes.OK


def format_reply(name, reply):
    head = f'queue {reply["queue"]} (pid {reply["pid"]})'
    if reply.get('error'):
        return f'{head}: error: {reply["error"]}'
    formatter = _FORMATTERS.get(name, _format_generic)
    return formatter(head, reply.get('result') or {})


def _format_ping(head, result):
    return f'{head}: pong'


def _format_print_jobs(head, result):
    return (f'{head}: logged {result.get("printed", 0)} job(s) of its job '
            'store; see the pscheduler log')


def _format_status(head, result):
    return (f'{head}: up {format_duration(result.get("uptime", 0))}, '
            f'memory {format_size(result.get("rss", 0))}, '
            f'running {result.get("running")}, '
            f'pending {result.get("pending")}, '
            f'executed {result.get("executed")}, '
            f'failed {result.get("failed")}, '
            f'retried {result.get("retried", 0)}, '
            f'missed {result.get("missed")}, '
            f'dead letters {result.get("dead_lettered")}'
            + _format_owner(result.get('store_owner'))
            + _format_health(result))


def _format_owner(owner):
    """Who owns the queue's job store (several daemons, several hosts)."""
    if not owner:
        return ''
    return f'; job store owner: {owner.get("host")} pid {owner.get("pid")}'


def _format_health(result):
    """Each thread's state and the last scheduler pass, when the child
    says them (a child of a version before them does not)."""
    threads = result.get('threads')
    if not threads:
        return ''
    text = '; threads: ' + ', '.join(f'{name} {state}'
                                     for name, state in threads.items())
    last_pass = result.get('last_scheduler_pass')
    if last_pass:
        text += (f'; last scheduler pass '
                 f'{format_duration(max(time.time() - last_pass, 0))} ago')
    return text


def _format_jobs(head, result):
    jobs = result.get('jobs') or []
    offset = result.get('offset', 0)
    total = result.get('total', len(jobs))
    if result.get('search'):
        head += (f': {total}{"+" if result.get("capped") else ""} '
                 f'match {result["search"]!r}')
    if not total:
        lines = [f'{head}: no deferred jobs']
    elif not jobs:
        lines = [f'{head}: {total} deferred job(s); none from #{offset + 1} '
                 f'(offset={offset} is past the last one)']
    else:
        lines = [f'{head}: {total} deferred job(s); #{offset + 1}-'
                 f'{offset + len(jobs)}:']
    for job in jobs:
        lines.append(f'  {job["id"]}  next run {job["next_run_time"] or "-"}'
                     f'  {job["trigger"]}  {job["name"]}')
    return '\n'.join(lines)


def _format_job(head, result):
    if not result.get('found'):
        return f'{head}: no deferred job {result.get("id")} here'
    return '\n'.join([f'{head}: job {result["id"]} ({result.get("kind")})',
                      f'  {result.get("func")}  args {result.get("args")}  '
                      f'kwargs {result.get("kwargs")}',
                      f'  {result.get("trigger_words")}; next run '
                      f'{result.get("next_run_time") or "-"}'])


def _format_dead_letters(head, result):
    lines = [f'{head}: {result.get("count")} dead letter(s) in '
             f'{result.get("dead_letter_queue")}']
    for entry in result.get('recent') or []:
        lines.append(f'  {entry.get("reason")}')
    return '\n'.join(lines)


def _format_purge(head, result):
    return f'{head}: purged {result.get("purged", 0)} dead letter(s)'


def _format_requeue_dead_letters(head, result):
    return (f'{head}: requeued {result.get("requeued", 0)} dead letter(s); '
            f'{result.get("left", 0)} left')


def _format_failed(head, result):
    jobs = result.get('jobs') or []
    count = result.get('count', len(jobs))
    lines = [f'{head}: {count} failed job(s)'
             + (f', the latest {len(jobs)}:' if len(jobs) < count
                else ', latest first:' if jobs else '')]
    for job in jobs:
        error = ' '.join((job.get('error') or '-').split())
        lines.append(f'  {job["id"]}  {job["func"]}  attempts '
                     f'{job["attempts"]}  failed {job["finished"] or "-"}  '
                     f'{error[:200]}')
    return '\n'.join(lines)


def _format_requeue(head, result):
    if result.get('requeued'):
        return f'{head}: job {result.get("id")} requeued'
    return f'{head}: job {result.get("id")} is not on this queue'


def _format_purge_failed(head, result):
    return f'{head}: purged {result.get("purged", 0)} failed job record(s)'


def _format_generic(head, result):
    return f'{head}: {json.dumps(result, sort_keys=True)}'


_FORMATTERS = {
    'ping': _format_ping,
    'print-jobs': _format_print_jobs,
    'status': _format_status,
    'jobs': _format_jobs,
    'job': _format_job,
    'dead-letters': _format_dead_letters,
    'purge-dead-letters': _format_purge,
    'requeue-dead-letters': _format_requeue_dead_letters,
    'failed': _format_failed,
    'requeue': _format_requeue,
    'purge-failed': _format_purge_failed,
}


def format_duration(seconds):
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    parts = [f'{value}{unit}' for value, unit in
             ((days, 'd'), (hours, 'h'), (minutes, 'm')) if value]
    return ' '.join(parts + [f'{seconds}s'])
