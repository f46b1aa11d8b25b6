"""``python -m bench``: run the benchmark cases, print one table, write
``docs/benchmarks.rst``.

    python -m bench [--quick] [--cases 1,2,3 | enqueue,throughput,...]
                    [--brokers redis,amqp,sqlite] [--systems ...]
                    [--repeat N] [--output PATH | --no-write] [-v]

Cases: 1 enqueue, 2 throughput, 3 latency (time to execution), 4 lateness
(date jobs), 5 cron (many stored cron jobs; pscheduler), 6 daemon (SIGKILL,
SIGHUP, RSS; pscheduler), 7 idle (idle CPU; on SQLite by default),
8 realistic (5 ms I/O and 5 ms CPU jobs, 1/2/4 processes; Redis),
9 soak (a million jobs through one child; pscheduler), 10 costs (status
records, metrics, outbox; pscheduler), 11 million (a million stored cron
jobs; pscheduler).
"""
import argparse
import json
import os
import sys
import time
import traceback

from . import cases, report
from .common import (ROOT, Context, install_cleanup, load_average, median,
                     stop_all)

CASE_NAMES = {'1': 'enqueue', '2': 'throughput', '3': 'latency',
              '4': 'lateness', '5': 'cron', '6': 'daemon', '7': 'idle',
              '8': 'realistic', '9': 'soak', '10': 'costs', '11': 'million'}
BROKER_CASES = ('enqueue', 'throughput', 'latency', 'lateness', 'idle')
ALL_SYSTEMS = ('pyramid_scheduler', 'kombu', 'celery', 'huey')
# Results of pscheduler with two children per queue (throughput case).
POOL_KEY = report.POOL_KEY

FULL = dict(repeat=3, enqueue=2000, warmup=200,
            throughput={'redis': 20000, 'amqp': 20000, 'sqlite': 3000},
            throughput_cap=60, latency=200, latency_cap=8, lateness=1000,
            lateness_spacing=0.005, idle=4, cron=100000, cron_sent=3000,
            realistic=2000, realistic_processes=(1, 2, 4), soak=1000000,
            soak_every=100000, costs=20000, costs_rounds=1000,
            million=1000000)
QUICK = dict(repeat=1, enqueue=500, warmup=100,
             throughput={'redis': 2000, 'amqp': 2000, 'sqlite': 500},
             throughput_cap=15, latency=50, latency_cap=4, lateness=100,
             lateness_spacing=0.01, idle=3, cron=10000, cron_sent=500,
             realistic=200, realistic_processes=(1, 2, 4), soak=20000,
             soak_every=5000, costs=2000, costs_rounds=100, million=20000)


def system_classes():
    from .celery_peer import CelerySystem
    from .huey_peer import HueySystem
    from .kombu_raw import KombuSystem
    from .ps import PyramidSchedulerSystem
    return {'pyramid_scheduler': PyramidSchedulerSystem,
            'kombu': KombuSystem, 'celery': CelerySystem, 'huey': HueySystem}


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog='python -m bench',
        description='Benchmark pyramid_scheduler/pscheduler against raw '
                    'kombu, Celery and Huey; print a table of medians and '
                    'ratios and write docs/benchmarks.rst.')
    parser.add_argument('--quick', action='store_true',
                        help='smaller counts, one repetition (~4 min)')
    parser.add_argument('--cases', default=','.join(CASE_NAMES),
                        help='comma-separated numbers or names: '
                             + ', '.join(f'{k} {v}' for k, v in
                                         CASE_NAMES.items()))
    parser.add_argument('--brokers', default='redis,amqp,sqlite')
    parser.add_argument('--systems', default=','.join(ALL_SYSTEMS))
    parser.add_argument('--repeat', type=int,
                        help='repetitions (medians are shown); default 3, '
                             '--quick 1')
    parser.add_argument('--processes', type=int, default=None,
                        help='pscheduler children per queue '
                             '(scheduler.processes) in every case; default: '
                             '1, and the throughput case runs again with 2')
    parser.add_argument('--idle-brokers', default='sqlite',
                        help='brokers on which case 7 (idle CPU) runs')
    parser.add_argument('--cron-jobs', type=int,
                        help='stored cron jobs for case 5 (default 100000, '
                             '--quick 10000)')
    parser.add_argument('--cron-sent', type=int,
                        help='of which sent with add_cron_job (default 3000,'
                             ' --quick 500; the rest is written to the store)')
    parser.add_argument('--soak-jobs', type=int,
                        help='jobs through one child in case 9 (default '
                             '1,000,000, --quick 20,000)')
    parser.add_argument('--million-jobs', type=int,
                        help='stored cron jobs in case 11 (default '
                             '1,000,000, --quick 20,000)')
    parser.add_argument('--output', default=None,
                        help='where to write the .rst (default '
                             'docs/benchmarks.rst; --quick: nowhere)')
    parser.add_argument('--no-write', action='store_true')
    parser.add_argument('--save', metavar='JSON',
                        help='also save the medians and run info as JSON')
    parser.add_argument('--render', metavar='JSON',
                        help='run nothing: print and write the tables of a '
                             'JSON saved with --save')
    parser.add_argument('-v', '--verbose', action='store_true')
    args = parser.parse_args(argv)
    chosen = []
    for item in args.cases.split(','):
        item = item.strip()
        name = CASE_NAMES.get(item, item)
        if name not in CASE_NAMES.values():
            parser.error(f'unknown case {item!r}')
        chosen.append(name)
    args.cases = chosen
    args.brokers = [b.strip() for b in args.brokers.split(',') if b.strip()]
    for b in args.brokers:
        if b not in ('redis', 'amqp', 'sqlite'):
            parser.error(f'unknown broker {b!r}')
    args.systems = [s.strip() for s in args.systems.split(',') if s.strip()]
    for s in args.systems:
        if s not in ALL_SYSTEMS:
            parser.error(f'unknown system {s!r}')
    args.idle_brokers = [b.strip() for b in args.idle_brokers.split(',')]
    return args


def latency_gap(system):
    if system.broker != 'sqlite':
        return 0.01
    return 1.0 if system.key == 'kombu' else 0.1


def run_case(case, system, sizes):
    if case == 'enqueue':
        return cases.enqueue_cost(system, sizes['enqueue'], sizes['warmup'])
    if case == 'throughput':
        return cases.throughput(system, sizes['throughput'][system.broker],
                                sizes['throughput_cap'])
    if case == 'latency':
        return cases.latency(system, sizes['latency'], sizes['latency_cap'],
                             latency_gap(system))
    if case == 'lateness':
        return cases.lateness(system, sizes['lateness'], 2.0,
                              sizes['lateness_spacing'])
    if case == 'idle':
        return cases.idle_cpu(system, sizes['idle'])
    raise ValueError(case)


def run_more_cases(ctx, args, sizes, classes, extra, errors):
    """Cases 5, 6 and 8-11, each once or ``repeat`` times (medians), into
    ``extra``."""
    from . import extracases
    for name, run, repeated in extracases.plan(ctx, args, sizes, classes,
                                                errors):
        ctx.log(f'{name} (case {extracases.NUMBERS[name]})')
        runs = []
        for rep in range(sizes['repeat'] if repeated else 1):
            try:
                runs.append(run())
            except Exception as exc:
                if args.verbose:
                    traceback.print_exc()
                errors.append(f'{name}: {exc}')
                runs.append({'error': str(exc)})
        extra[name] = extracases.median_nested(runs)


def medians(runs):
    good = [r for r in runs if 'error' not in r]
    if not good:
        return runs[-1]
    out = {}
    for key in good[0]:
        if key == 'partial':
            out[key] = any(r.get('partial') for r in good)
        else:
            out[key] = median([r.get(key) for r in good])
    out['runs'] = len(good)
    return out


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sizes = dict(QUICK if args.quick else FULL)
    if args.repeat:
        sizes['repeat'] = args.repeat
    if args.cron_jobs:
        sizes['cron'] = args.cron_jobs
    if args.cron_sent is not None:
        sizes['cron_sent'] = args.cron_sent
    if args.soak_jobs:
        sizes['soak'] = args.soak_jobs
        sizes['soak_every'] = min(sizes['soak_every'], args.soak_jobs)
    if args.million_jobs:
        sizes['million'] = args.million_jobs
    output = args.output or (None if args.quick else os.path.join(
        ROOT, 'docs', 'benchmarks.rst'))
    if args.no_write:
        output = None

    if args.render:
        return render(args.render, output if args.output or not args.quick
                      else None)

    install_cleanup()
    ctx = Context(verbose=args.verbose)
    began, load_start = time.monotonic(), load_average()
    raw, extra, errors = {}, {}, []
    classes = system_classes()
    worker_label = '?'
    try:
        for broker in args.brokers:
            broker_cases = [c for c in args.cases if c in BROKER_CASES and (
                c != 'idle' or broker in args.idle_brokers)]
            if not broker_cases:
                continue
            systems = []
            for key in args.systems:
                cls = classes[key]
                if broker not in cls.brokers:
                    continue
                system = (cls(ctx, broker, processes=args.processes)
                          if key == 'pyramid_scheduler' and args.processes
                          else cls(ctx, broker))
                try:
                    system.setup()
                except Exception as exc:
                    errors.append(f'{system.label} on {broker}: setup: {exc}')
                    continue
                systems.append(system)
                if key == 'pyramid_scheduler':
                    worker_label = system.worker_label
                    if 'throughput' in broker_cases and not args.processes:
                        # The lever for RabbitMQ: several children
                        # per queue; measured beside the one-child default.
                        pool = cls(ctx, broker, processes=2)
                        pool.only_cases = ('throughput',)
                        pool.result_key = POOL_KEY
                        try:
                            pool.setup()
                        except Exception as exc:
                            errors.append(f'{pool.label} on {broker}: '
                                          f'setup: {exc}')
                        else:
                            systems.append(pool)
            try:
                for rep in range(sizes['repeat']):
                    for system in systems:
                        for case in broker_cases:
                            if case == 'lateness' and (
                                    not system.supports_date or broker
                                    not in system.date_brokers):
                                continue
                            if case not in getattr(system, 'only_cases',
                                                   (case,)):
                                continue
                            ctx.log(f'{broker} {system.label} {case} '
                                    f'(run {rep + 1}/{sizes["repeat"]})')
                            try:
                                result = run_case(case, system, sizes)
                            except Exception as exc:
                                if args.verbose:
                                    traceback.print_exc()
                                errors.append(f'{system.label} on {broker}, '
                                              f'{case}: {exc}')
                                result = {'error': str(exc)}
                                system.stop_worker()
                            key = getattr(system, 'result_key', system.key)
                            raw.setdefault((case, broker, key),
                                           []).append(result)
                            if args.verbose:
                                ctx.log(f'  -> {result}')
                        system.stop_worker()
            finally:
                for system in systems:
                    system.stop_worker()
                    try:
                        system.teardown()
                    except Exception as exc:
                        errors.append(f'{system.label} on {broker}: '
                                      f'teardown: {exc}')
        run_more_cases(ctx, args, sizes, classes, extra, errors)
        if worker_label == '?' and 'pyramid_scheduler' in args.systems:
            worker_label = 'pscheduler (master + children, as each case says)'
    finally:
        stop_all()

    results = {key: medians(runs) for key, runs in raw.items()}
    sizes_shown = {('throughput', b): n
                   for b, n in sizes['throughput'].items()}
    info = {
        'date': report.now_text(),
        'machine': report.machine(),
        'packages': report.package_versions(),
        'servers': report.server_versions(),
        'load_start': load_start,
        'load_end': load_average(),
        'duration': time.monotonic() - began,
        'repeat': sizes['repeat'],
        'command': 'python -m bench ' + ' '.join(
            sys.argv[1:] if argv is None else argv),
        'worker': worker_label,
    }
    if args.save:
        with open(args.save, 'w', encoding='utf-8') as f:
            json.dump({'results': {'|'.join(k): v for k, v in results.items()},
                       'sizes': {'|'.join(k): v
                                 for k, v in sizes_shown.items()},
                       'extra': extra, 'errors': errors, 'info': info,
                       'raw': {'|'.join(k): v for k, v in raw.items()}},
                      f, indent=1)
    publish(results, extra, sizes_shown, info, errors, output)
    if not ctx.keep:
        import shutil
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    return 1 if errors else 0


def publish(results, extra, sizes_shown, info, errors, output):
    main_table, daemon_table, goal_table = report.tables(results, extra,
                                                         sizes_shown)
    report.print_report(info, main_table, daemon_table, goal_table, errors)
    if output:
        os.makedirs(os.path.dirname(output), exist_ok=True)
        report.write_rst(output, info, main_table, daemon_table, goal_table,
                         errors, report.NOTES)
        print(f'\nwritten: {os.path.relpath(output, os.getcwd())}')


def render(path, output):
    with open(path, encoding='utf-8') as f:
        saved = json.load(f)
    results = {tuple(k.split('|')): v for k, v in saved['results'].items()}
    sizes = {(k.split('|')[0], k.split('|')[1]): v
             for k, v in saved['sizes'].items()}
    publish(results, saved['extra'], sizes, saved['info'], saved['errors'],
            output)
    return 0


if __name__ == '__main__':
    sys.exit(main())
