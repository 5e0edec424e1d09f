"""The nvscope command line: a bad option is one line and exit code 2."""

from __future__ import annotations

import pytest

from nvscope.host.cli import main


@pytest.mark.parametrize("argv, words", [
    (["host", "--bogus"], "unrecognized arguments: --bogus"),
    (["vqns", "fit", "in.npz", "-o", "out.npz", "--restarts", "abc"], "--restarts: invalid int value"),
    ([], "required: command"),
])
def test_bad_option_is_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
