"""mypy sees through @oq.task: wrong arguments are errors, results keep their type."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SAMPLE = Path(__file__).resolve().parents[1] / "typing" / "typed_usage.py"


def test_mypy_checks_task_arguments_and_result_types() -> None:
    out, err, _ = api.run([str(SAMPLE), "--no-incremental", "--no-error-summary"])
    assert 'Revealed type is "int"' in out, out + err
    assert 'Revealed type is "bytes"' in out, out + err
    assert 'Argument 1 to "enqueue_sync" of "TaskFunction" has incompatible type "str"' in out
    assert 'has incompatible type "list[Never]"; expected "int"' in out
    assert out.count("error:") == 2, out
