"""common/log: ``log_source_location`` adds SPIRE's ``file`` and ``func`` fields to every line."""

from __future__ import annotations

import json
import re
from pathlib import Path

from spire_py.common import log


def _emit(tmp_path: Path, fmt: str, source_location: bool) -> str:
    out = tmp_path / "log"
    log.setup("INFO", fmt, str(out), source_location=source_location)
    try:
        log.get("test").info("Hello world", extra=log.fields(spiffe_id="spiffe://example.org/w"))
    finally:
        log.setup()  # back to stderr without the filter
    return out.read_text()


def test_text_lines_carry_file_and_func_as_logrus_does(tmp_path: Path) -> None:
    line = _emit(tmp_path, "text", True)
    assert re.fullmatch(
        r'time=\S+ level=info msg="Hello world" file="test_log_source_location\.py:\d+" '
        r"func=tests\.unit\.common\.test_log_source_location\._emit spiffe_id=spiffe://example\.org/w "
        r"subsystem_name=test\n", line), line


def test_json_lines_carry_file_and_func(tmp_path: Path) -> None:
    obj = json.loads(_emit(tmp_path, "json", True))
    assert re.fullmatch(r"test_log_source_location\.py:\d+", obj["file"])
    assert obj["func"] == "tests.unit.common.test_log_source_location._emit"


def test_without_the_setting_lines_carry_no_location(tmp_path: Path) -> None:
    line = _emit(tmp_path, "text", False)
    assert "file=" not in line and "func=" not in line


def test_a_method_is_named_with_its_class(tmp_path: Path) -> None:
    class Worker:
        def work(self) -> None:
            log.get("test").warning("working")

    out = tmp_path / "log"
    log.setup("INFO", "json", str(out), source_location=True)
    try:
        Worker().work()
    finally:
        log.setup()
    assert json.loads(out.read_text())["func"] == (
        "tests.unit.common.test_log_source_location.test_a_method_is_named_with_its_class.<locals>.Worker.work")
