"""Backend URLs → Pyncette keyword arguments; bad ones → one line, exit code 2, no password shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyncette_operator.backend_url import BackendUrlError
from pyncette_operator.backend_url import parse_backend_url
from pyncette_operator.backend_url import redact
from pyncette_operator.backend_url import redact_text


def test_default_is_embedded_sqlite_in_data_dir() -> None:
    config = parse_backend_url(None, data_dir="/var/lib/op")
    assert config.kind == "sqlite"
    assert config.kwargs == {"sqlite_database": "/var/lib/op/pyncette-operator.db"}
    assert not config.shared


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("sqlite:///rel/file.db", {"sqlite_database": "rel/file.db"}),
        ("sqlite:////abs/file.db", {"sqlite_database": "/abs/file.db"}),
        (
            "redis://localhost:16379/0",
            {"redis_url": "redis://localhost:16379/0", "redis_namespace": "pyncette-operator"},
        ),
        ("redis://:pw@r:1/2?namespace=ops", {"redis_url": "redis://:pw@r:1/2", "redis_namespace": "ops"}),
        (
            "postgresql://u:p@db:15432/pyncette?table=tasks",
            {"postgres_url": "postgresql://u:p@db:15432/pyncette", "postgres_table_name": "tasks"},
        ),
        (
            "postgres://u@db/pyncette",
            {"postgres_url": "postgres://u@db/pyncette", "postgres_table_name": "pyncette_operator"},
        ),
        (
            "mysql://user:p%40ss@db:13306/pyncette",
            {
                "mysql_host": "db",
                "mysql_port": 13306,
                "mysql_user": "user",
                "mysql_password": "p@ss",
                "mysql_database": "pyncette",
                "mysql_table_name": "pyncette_operator",
            },
        ),
        (
            "dynamodb://eu-west-1/pyncette?endpoint=http://localhost:18000",
            {
                "dynamodb_region_name": "eu-west-1",
                "dynamodb_table_name": "pyncette",
                "dynamodb_endpoint": "http://localhost:18000",
            },
        ),
        ("memory://", {}),
    ],
)
def test_forms(url: str, kwargs: dict[str, object]) -> None:
    assert parse_backend_url(url).kwargs == kwargs


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("foo://x", "unknown scheme 'foo'"),
        ("sqlite://x.db", "sqlite:///relative"),
        ("mysql://u:secret@db", "database name"),
        ("mysql://u:secret@db:notaport/x", "port"),
        ("redis://", "needs a host"),
        ("redis://h?bogus=1", "unknown option(s) bogus"),
        ("dynamodb://eu-west-1", "dynamodb://REGION/TABLE"),
        ("dynamodb://r/t?endpoint=localhost:1", "http(s) URL"),
        ("postgresql://u@db/x?table=drop;table", "table name"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(BackendUrlError) as info:
        parse_backend_url(url)
    message = str(info.value)
    assert fragment in message
    assert "secret" not in message
    assert "\n" not in message


def test_cli_bad_backend_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyncette_operator.cli", "run", "--backend", "mysql://u:secret@db"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "database name" in lines[0]
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_handler_module_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pyncette_operator.cli", "run", "--handlers", "no_such_module_xyz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--handlers no_such_module_xyz" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:hunter2@db/x", "postgresql://u:***@db/x"),
        ("redis://db", "redis://db"),
        # Not percent-encoded: urlsplit ends the host at the first "/" or "?", inside the password.
        ("postgresql://u:hun/ter2@db/x", "postgresql://u:***@db/x"),
        ("redis://:hun?ter2@db:6379/0", "redis://:***@db:6379/0"),
        ("mysql://u:hu@n#ter2@db/x", "mysql://u:***@db/x"),
        ("postgresql://u@db/x?sslmode=require&password=hunter2", "postgresql://u@db/x?sslmode=require&password=***"),
        ("postgresql://db/x?PASSWORD=hunter2", "postgresql://db/x?PASSWORD=***"),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:hun/ter2@db/x",
        "postgresql://u:5432/hunter2@db/x",  # parses, with the password's tail as the database
        "redis://:hunter2/x@db:6379/0",
        "mysql://u:hun?ter2@db/x",
        "redis://:12/hunter2@db/0",
        "mysql://user:hunter2@db/x?password=hunter2&bogus=1",
        "postgresql://u@db/x?table=no;pe&password=hunter2",
        "dynamodb://r/t?endpoint=ftp://u:hunter2@h",
    ],
)
def test_url_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(BackendUrlError) as info:
        parse_backend_url(url)
    assert "hunter2" not in str(info.value)
    assert "hunter" not in str(info.value)


def test_redact_text_masks_urls_and_password_parameters_in_log_lines() -> None:
    line = "connect to postgresql://app:s3/cr@t@db:5432/x?sslmode=require&password=s3cr3t failed; retry"
    assert redact_text(line) == ("connect to postgresql://app:***@db:5432/x?sslmode=require&password=*** failed; retry")


def test_operator_log_lines_carry_no_password(tmp_path: Path) -> None:
    """A password in ``?password=`` reaches the log only masked, through the CLI's log formatter."""
    script = tmp_path / "log_it.py"
    script.write_text(
        "import logging, sys\n"
        "from pyncette_operator import cli\n"
        "cli.configure_logging('INFO')\n"
        "try:\n"
        "    raise ConnectionError('cannot reach postgresql://db/x?password=hunter2')\n"
        "except ConnectionError:\n"
        "    logging.getLogger('x').exception('backend down: redis://:hunter2@r:6379/0')\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert "backend down: redis://:***@r:6379/0" in result.stderr
    assert "postgresql://db/x?password=***" in result.stderr  # the traceback too
    assert "hunter2" not in result.stderr
