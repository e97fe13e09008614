"""The arguments dbspica's engine hands PyMySQL: TLS is not offered to a server on this host
(PyMySQL would build a certificate store for every connection to offer it), and is left to
PyMySQL, or to the operator's ``ssl_*`` options, everywhere else."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from spica_core.config import DatabaseConfig
from spica_core.db.engine import make_engine


class _Stop(Exception):
    """Raised from the connect hook: the arguments are all a case needs, not a server."""


def _connect_params(url: str) -> dict[str, Any]:
    engine = make_engine(DatabaseConfig(url=url))
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def _capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise _Stop

    with pytest.raises(_Stop):
        engine.connect()
    engine.dispose()
    return seen


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://spica@127.0.0.1:3306/dbspica",
        "mysql+pymysql://spica@localhost/dbspica",
        "mysql+pymysql://spica@[::1]:3306/dbspica",
        "mysql+pymysql://spica@/dbspica?unix_socket=/run/mysqld/mysqld.sock",
    ],
)
def test_no_tls_offered_to_a_server_on_this_host(url: str) -> None:
    assert _connect_params(url)["ssl_disabled"] is True


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://spica@db.cluster.example:3306/dbspica",
        "mysql+pymysql://spica@10.0.0.7/dbspica",
        "mysql+pymysql://spica@127.0.0.1/dbspica?ssl_ca=/etc/ssl/dbspica-ca.pem",
    ],
)
def test_tls_left_to_pymysql_and_the_operator_elsewhere(url: str) -> None:
    params = _connect_params(url)
    assert "ssl_disabled" not in params
    if "ssl_ca" in url:
        assert params["ssl"]["ca"] == "/etc/ssl/dbspica-ca.pem"
