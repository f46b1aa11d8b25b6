"""Where the signing secrets come from: the ini, a file or the environment.

Kept apart from signing.py (the HMAC itself) so that reading settings needs
no crypto, and signing needs no settings: each side sees only bytes.
Rotation is described in signing.py.
"""
import os

from .values import bad_value

MIN_SECRET_LENGTH = 16
SOURCES = ('broker.secret', 'broker.secret.file', 'broker.secret.env')


def load_secrets(conf):
    """(current, previous...) secrets from the ini, a file or the environment.

    ``broker.secret`` (literal), ``broker.secret.file`` (a path) or
    ``broker.secret.env`` (a variable name) give the current secret;
    ``broker.secret.previous`` (space-separated) still verifies during a
    rotation but never signs.
    """
    sources = [key for key in SOURCES if conf.get(key)]
    if len(sources) > 1:
        names = ', '.join(f'scheduler.{key}' for key in sources)
        raise bad_value(sources[1], '<hidden>', f'only one of {names}')
    current = _current_secret(conf)
    previous = (conf.get('broker.secret.previous') or '').split()
    if previous and not current:
        raise bad_value('broker.secret.previous', '<hidden>',
                        'to be used together with a current secret')
    if current is not None and len(current) < MIN_SECRET_LENGTH:
        # The value itself is never shown, not even a short (or wrong) one.
        raise bad_value(sources[0], '<hidden>',
                        f'a secret of at least {MIN_SECRET_LENGTH} characters')
    return tuple(s.encode('utf-8') for s in [current, *previous] if s)


def _current_secret(conf):
    if conf.get('broker.secret'):
        return conf['broker.secret'].strip()
    if conf.get('broker.secret.file'):
        return _read_secret_file(conf['broker.secret.file'].strip())
    if conf.get('broker.secret.env'):
        return _read_secret_env(conf['broker.secret.env'].strip())
    return None


def _read_secret_file(path):
    try:
        with open(path, encoding='utf-8') as handle:
            return handle.read().strip()
    except OSError as exc:
        raise bad_value('broker.secret.file', path,
                        'a readable file holding the secret '
                        f'({exc.strerror})')


def _read_secret_env(name):
    current = os.environ.get(name, '').strip()
    if not current:
        raise bad_value('broker.secret.env', name,
                        'the name of a set, non-empty environment variable')
    return current
