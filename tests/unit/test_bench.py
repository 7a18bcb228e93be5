"""The test bench's command line, where it needs no bench: what `info` says of a bench that is not up."""

from __future__ import annotations

from tests import bench


def test_info_of_a_bench_that_is_not_up_says_how_to_start_it_in_one_line(tmp_path, mocker, capsys):
    down = bench.Bench("demo")
    down.run = tmp_path / "run"  # nothing runs there: the bench is not up
    mocker.patch.object(bench, "Bench", return_value=down)
    assert bench.main(["info", "--profile", "demo"]) == 1
    err = capsys.readouterr().err
    assert err == ("bench: the demo bench is not up: start it with `.venv/bin/python -m tests.bench up --profile "
                   "demo`\n")
