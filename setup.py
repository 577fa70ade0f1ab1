"""Only what pyproject.toml cannot say: the packages of the wheel.

The Alembic migrations stay at the top of the checkout (``migrations/``, where ``alembic.ini`` and
the ``alembic`` command find them) and travel in the wheel as ``abstats/migrations``, so that
``abstats db upgrade`` works from an installed wheel; ``abstats.db.migrate`` looks for the packaged
copy first and falls back to the checkout's.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["abstats", "abstats.*"], exclude=["*.__pycache__"]),
        "abstats.migrations",
        "abstats.migrations.versions",
    ],
    package_dir={
        "abstats.migrations": "migrations",
        "abstats.migrations.versions": "migrations/versions",
    },
)
