"""What the services log at INFO: the business, not the frameworks' every step."""

import logging
from collections.abc import Iterator

import pytest

from dealflow_common.logs import configure_logging


@pytest.fixture
def configured() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = ("aiokafka", "uvicorn.access", "apscheduler")
    levels = {name: logging.getLogger(name).level for name in loggers}
    configure_logging("test", "INFO", "text")
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, before in levels.items():
        logging.getLogger(name).setLevel(before)


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    "framework",
    ["apscheduler.executors.default", "aiokafka.consumer.group_coordinator", "uvicorn.access"],
)
def test_a_frameworks_every_step_is_not_logged_but_its_warnings_are(framework: str) -> None:
    log = logging.getLogger(framework)
    assert not log.isEnabledFor(logging.INFO)
    assert log.isEnabledFor(logging.WARNING)


@pytest.mark.usefixtures("configured")
def test_the_business_log_keeps_its_info_lines() -> None:
    assert logging.getLogger("dealflow.audit").isEnabledFor(logging.INFO)
