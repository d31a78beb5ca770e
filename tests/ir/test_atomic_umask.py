"""Atomic outputs keep the user's umask and leave nothing hidden behind when they fail (issue 11)."""

import builtins
import os
import stat

import pytest

from spikeforge.ir import atomic
from spikeforge.ir.atomic import copy_file, current_umask, staged_directory, write_json, write_text


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def hidden(folder) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_current_umask_is_read_without_changing_it(umask, monkeypatch):
    assert current_umask() == umask
    assert current_umask() == umask                      # reading it left it as it was

    real_open = builtins.open

    def no_proc(file, *args, **kwargs):
        if str(file).startswith("/proc/"):
            raise OSError("no /proc here")
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr(builtins, "open", no_proc)       # the os.umask fallback
    assert current_umask() == umask and current_umask() == umask


def test_files_get_0666_and_directories_0777_less_the_umask(umask, tmp_path):
    file_mode, dir_mode = 0o666 & ~umask, 0o777 & ~umask
    out = tmp_path / "new" / "deeper"
    write_text(out / "a.txt", "text")
    write_json(out / "b.json", {"x": 1})
    source = tmp_path / "source.bin"
    source.write_bytes(b"\1\2")
    os.chmod(source, 0o600)                               # copy_file does not copy the source's mode
    copy_file(source, out / "c.bin")
    for name in ("a.txt", "b.json", "c.bin"):
        assert mode(out / name) == file_mode, name
    assert mode(tmp_path / "new") == dir_mode and mode(out) == dir_mode
    with staged_directory(out / "design") as staging:
        assert mode(staging) == dir_mode
        (staging / "rom").mkdir()
        (staging / "rom" / "w.hex").write_text("00\n")
        (staging / "design.json").write_text("{}\n")
    design = out / "design"
    assert mode(design) == dir_mode and mode(design / "rom") == dir_mode
    assert mode(design / "rom" / "w.hex") == file_mode and mode(design / "design.json") == file_mode
    # Replacing an existing output keeps the rule and leaves nothing hidden.
    write_text(out / "a.txt", "again")
    with staged_directory(design) as staging:
        (staging / "design.json").write_text("{}\n")
    assert mode(out / "a.txt") == file_mode and mode(design) == dir_mode
    assert hidden(out) == [] and hidden(tmp_path) == []


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_leaves_the_old_output_and_nothing_hidden(tmp_path, failure):
    write_text(tmp_path / "out.txt", "old")
    with staged_directory(tmp_path / "dir") as staging:
        (staging / "keep").write_text("old")

    def fail_while_writing(temporary):
        temporary.write_text("half")
        raise failure("interrupted")
    with pytest.raises(failure):
        with atomic._staged_file(tmp_path / "out.txt") as temporary:
            fail_while_writing(temporary)
    with pytest.raises(failure):
        with staged_directory(tmp_path / "dir") as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "half").write_text("half")
            raise failure("interrupted")
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "missing", tmp_path / "copy.bin")
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert (tmp_path / "out.txt").read_text() == "old"
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["keep"]
    assert not (tmp_path / "copy.bin").exists() and not (tmp_path / "bad.json").exists()
    assert hidden(tmp_path) == []


def test_a_failed_swap_puts_the_old_directory_back(tmp_path, monkeypatch):
    with staged_directory(tmp_path / "dir") as staging:
        (staging / "keep").write_text("old")
    real_replace = os.replace
    calls = []

    def replace(source, destination):
        calls.append((str(source), str(destination)))
        if len(calls) == 2:                               # the new output's rename fails
            raise OSError("rename failed")
        return real_replace(source, destination)
    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        with staged_directory(tmp_path / "dir") as staging:
            (staging / "new").write_text("new")
    assert len(calls) == 3                                # retire, fail, put back
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["keep"]
    assert hidden(tmp_path) == []
