"""Tests of minrep.progress: plain lines instead of bars when stderr is not a terminal."""

from minrep import progress


def test_lines_on_a_pipe(capsys, monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert list(progress.bar(range(5), desc="simulate")) == [0, 1, 2, 3, 4]
    with progress.bar(total=2, desc="analyze") as steps:
        steps.set_postfix_str("encode")
        steps.update()
        inner = progress.bar(range(1000), desc="generate", nested=True)
        assert sum(inner) == 499500
        steps.update()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "simulate: started" and lines[1].startswith("simulate: done in")
    assert lines[2:4] == ["analyze: started", "analyze: encode"]
    assert lines[4].startswith("analyze: done in") and len(lines) == 5  # nothing from inner


def test_nothing_when_disabled(capsys, monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    assert list(progress.bar(range(3), desc="x", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""
