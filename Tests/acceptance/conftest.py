import pytest

from postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL server for the whole run, started on first use."""
    server = PostgresServer().start()
    yield server
    server.remove()
