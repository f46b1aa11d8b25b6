"""Headless Chromium through selenium, for the dashboard's browser test and
scripts/screenshot: Debian's ``chromium`` driven by its
``/usr/bin/chromedriver`` (both installed by scripts/services.sh), named
explicitly so that selenium never downloads a driver.

As root and on a closed network Chromium needs no sandbox, no GPU and none
of its background connections (QUIC, component updates, sync), and a fresh
profile directory each time.
"""
import contextlib
import os
import shutil

CHROMIUM = os.environ.get('PSCHEDULER_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('PSCHEDULER_CHROMEDRIVER',
                              '/usr/bin/chromedriver')
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
         '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         '--disable-dev-shm-usage')


def missing():
    """Why the browser cannot run here (None if it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return (f'{path} is not installed: bash scripts/services.sh '
                    'start installs chromium and chromium-driver')
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


@contextlib.contextmanager
def chromium(profile_dir, width=1280, height=900):
    """A selenium WebDriver of a fresh headless Chromium; quit after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f'--user-data-dir={profile_dir}')
    options.add_argument(f'--window-size={width},{height}')
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                              options=options)
    try:
        driver.set_page_load_timeout(60)
        yield driver
    finally:
        driver.quit()
