"""The test bench's command line, where it needs no bench: what `info` says of a bench that is not up, and how many
hosts `down` takes down."""

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


def test_down_takes_down_every_host_an_up_started_not_only_the_default_count(tmp_path, mocker):
    """`make benchmark` brings the `bench` profile up with 16 hosts; `down --profile bench` (2 by default) must still
    take down all 16: the network namespaces and the run directory say how many there are."""
    b = bench.Bench("bench")
    b.run = tmp_path / "run"
    (b.run / "host3").mkdir(parents=True)
    netns = "sk-h16 (id: 7)\nsk-h2\nst-h40\nother\n"  # another profile's hosts are not this one's
    mocker.patch.object(bench, "_run", return_value=mocker.Mock(stdout=netns))
    assert b.count == 2 and b._started() == 16
    mocker.patch.object(bench, "_run", return_value=mocker.Mock(stdout=""))
    assert b._started() == 3
    (b.run / "host3").rmdir()
    assert b._started() == 2
