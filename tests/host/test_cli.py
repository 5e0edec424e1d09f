"""The nvscope command line: a bad option is one line and exit code 2."""

from __future__ import annotations

import pytest

from nvscope.host.cli import main


@pytest.mark.parametrize("argv, words", [
    (["host", "--bogus"], "unrecognized arguments: --bogus"),
    (["host", "--run", "bogus"], "invalid choice: 'bogus'"),
    (["vqns", "fit", "in.npz", "-o", "out.npz", "--restarts", "abc"], "--restarts: invalid int value"),
    ([], "required: command"),
])
def test_bad_option_is_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


@pytest.mark.parametrize("content, words", [(None, "not found"), (b"junk", "not a model onnxruntime can run")])
def test_host_with_an_unusable_g2_model_stops_at_start(tmp_path, capsys, content, words):
    model = tmp_path / "g2.onnx"
    if content is not None:
        model.write_bytes(content)
    # no rig listens at this endpoint: the host must stop on the model before it waits for one
    code = main(["host", "--connect", "tcp://127.0.0.1:1", "--out", str(tmp_path / "data"),
                 "--g2-model", str(model), "--run", "srm", "--exit-when-done"])
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "nvscope host" in ln]
    assert len(err) == 1 and words in err[0] and "g2.onnx" in err[0]
    assert not (tmp_path / "data").exists()


def test_host_with_an_unusable_endpoint_or_out_folder_stops_before_any_run(tmp_path, capsys):
    not_a_folder = tmp_path / "afile"
    not_a_folder.write_text("")
    for argv, words in ((["--connect", "notanendpoint", "--out", str(tmp_path / "d")], "--connect notanendpoint"),
                        (["--connect", "tcp://127.0.0.1:1", "--out", str(not_a_folder)], "cannot write run files")):
        code = main(["host", *argv, "--run", "srm", "--exit-when-done"])
        assert code == 2
        err = [ln for ln in capsys.readouterr().err.strip().splitlines() if "nvscope host" in ln]
        assert len(err) == 1 and words in err[0], err
