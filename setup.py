from setuptools import find_packages, setup

with open('README.rst', encoding='utf-8') as handle:
    long_description = handle.read()

install_requires = [
    'APScheduler>=3.11,<3.12',
    'kombu>=5.3,<6',
    'pyramid>=2.0,<3',
    'SQLAlchemy>=2.0,<2.1',
    'transaction>=4,<6',
    'setproctitle>=1.3,<2',
    'psutil>=5.9,<8',
    'plaster_pastedeploy>=1.0,<2',
    'hupper>=1.12,<2',
    'tzlocal>=5,<6',
]

extras_require = {
    'redis': ['redis>=5,<9'],
    'amqp': ['amqp>=5.2,<6'],
    'postgres': ['psycopg2-binary>=2.9,<3'],
    'demo': ['waitress>=3,<4', 'pyramid_tm>=2.5,<3'],
    'test': [
        'pytest>=8,<10',
        'WebTest>=3,<4',
        'pyramid_tm>=2.5,<3',
        'hypothesis>=6.100,<7',
        'waitress>=3,<4',
    ],
    'bench': ['celery>=5.4,<6', 'huey>=2.5,<4'],
}

setup(
    name='pyramid_scheduler',
    version='1.0.0.dev0',
    description='Background, deferred and periodic jobs for Pyramid, '
                'with the pscheduler supervisor daemon',
    long_description=long_description,
    long_description_content_type='text/x-rst',
    classifiers=[
        'Framework :: Pyramid',
        'Programming Language :: Python :: 3.11',
        'License :: OSI Approved :: MIT License',
    ],
    python_requires='>=3.11',
    packages=find_packages(exclude=['tests', 'tests.*', 'bench', 'demo']),
    include_package_data=True,
    zip_safe=False,
    install_requires=install_requires,
    extras_require=extras_require,
    entry_points={
        'console_scripts': ['pscheduler = pscheduler.cli:main'],
    },
)
