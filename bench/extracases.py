"""The cases that are not one number per system and broker (5, 6, 8-11):
which run, with what sizes, and the medians of their repetitions."""
import statistics

NUMBERS = {'cron': 5, 'daemon': 6, 'realistic': 8, 'soak': 9, 'costs': 10,
           'million': 11}
# Cases that run only pscheduler.
OURS_ONLY = ('cron', 'daemon', 'soak', 'costs', 'million')


def plan(ctx, args, sizes, classes, errors):
    """[(name, run, repeated)] of the chosen cases, in case order.

    ``repeated``: run ``repeat`` times, medians kept; the others run once
    (a soak or a million jobs once is the point; 5 and 6 take their own
    medians of 3 inside).
    """
    from . import costs, daemon, million, realistic, soak
    runs = {
        'cron': (lambda: daemon.cron_case(ctx, sizes['cron'],
                                          sizes['cron_sent'], 3), False),
        'daemon': (lambda: daemon.daemon_case(ctx, 3), False),
        'realistic': (lambda: realistic.realistic_case(
            ctx, classes, args.systems, sizes['realistic_processes'],
            sizes['realistic'], errors=errors), True),
        'soak': (lambda: soak.soak_case(ctx, sizes['soak'],
                                        sizes['soak_every']), False),
        'costs': (lambda: costs.costs_case(
            ctx, sizes['costs'], sizes['throughput_cap'],
            sizes['costs_rounds'], errors), True),
        'million': (lambda: million.million_case(ctx, sizes['million'], 3),
                    False),
    }
    chosen = []
    for name in sorted(NUMBERS, key=NUMBERS.get):
        if name not in args.cases:
            continue
        if name in OURS_ONLY and 'pyramid_scheduler' not in args.systems:
            continue
        run, repeated = runs[name]
        chosen.append((name, run, repeated))
    return chosen


def median_nested(runs):
    """The median of each number across runs of the same shape (dicts and
    lists walked through); a failed run (``{'error': ...}``) is left out
    unless all failed."""
    good = [r for r in runs if not (isinstance(r, dict) and 'error' in r)]
    if not good:
        return runs[-1]
    first = good[0]
    if len(good) == 1:
        return first
    if isinstance(first, dict):
        return {key: median_nested([r[key] for r in good if key in r])
                for key in first}
    if isinstance(first, (list, tuple)) and all(
            len(r) == len(first) for r in good):
        return [median_nested(list(items)) for items in zip(*good)]
    if isinstance(first, bool):
        return any(good)
    if isinstance(first, (int, float)):
        return statistics.median(good)
    return first
