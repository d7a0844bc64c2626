"""The scheduler's persistent job store (``scheduler.jobstore_url``, apscheduler's
SQLAlchemy job store): opened, first used and read without a running scheduler, every
failure a :class:`~backend.errors.ConfigError` naming the setting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from backend.errors import ConfigError

__all__ = ["jobstore", "jobstore_file", "opening", "stored_jobs"]


def _parsed(url: str) -> tuple[URL, Path | None]:
    """``(the URL, its SQLite file or None)``; :class:`ConfigError` if it is not one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"scheduler.jobstore_url: not a SQLAlchemy URL: {url!r}") from None
    database = parsed.database
    is_file = parsed.drivername.startswith("sqlite") and database not in (None, "", ":memory:")
    return parsed, Path(str(database)) if is_file else None


def jobstore_file(url: str) -> Path | None:
    """The job store's SQLite file, or None for an in-memory or server database.
    Raises :class:`ConfigError` for a URL that is not one."""
    return _parsed(url)[1]


def jobstore(url: str) -> SQLAlchemyJobStore:
    """The SQLAlchemy job store; a SQLite file's directory is created. Raises
    :class:`ConfigError` for a URL that is not one, a driver not installed or a directory
    that cannot be made (they had ended as an internal error, exit 1)."""
    parsed, file = _parsed(url)
    try:
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
        return SQLAlchemyJobStore(url=url)
    except (ImportError, NoSuchModuleError) as err:  # e.g. postgresql:// without psycopg
        raise ConfigError(
            f"scheduler.jobstore_url: the {parsed.drivername} driver is not installed ({err})"
        ) from None
    except OSError as err:
        raise ConfigError(
            f"scheduler.jobstore_url: cannot create {parsed.database}: {err}"
        ) from None


@contextmanager
def opening(url: str) -> Iterator[None]:
    """The job store's first use (its table made or read): a database that cannot be
    opened (a directory, a file that is no SQLite database, a server that refuses) is a
    :class:`ConfigError` naming ``scheduler.jobstore_url`` (it had ended as an internal
    error, exit 1)."""
    try:
        yield
    except SQLAlchemyError as err:
        reason = str(getattr(err, "orig", None) or err).splitlines()[0]
        shown = make_url(url).render_as_string(hide_password=True)  # never a password
        raise ConfigError(
            f"scheduler.jobstore_url {shown}: cannot open the job store ({reason})"
        ) from None


def stored_jobs(url: str) -> dict[str, Job]:
    """The jobs in the store (read without a running scheduler); ``{}`` when the store is
    a SQLite file that does not exist yet (nothing is created then)."""
    _, file = _parsed(url)
    if file is not None and not file.is_file():
        return {}
    store = jobstore(url)
    with opening(url):
        store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        return {job.id: job for job in store.get_all_jobs()}
    finally:
        store.shutdown()
