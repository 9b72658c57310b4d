"""``raypost data stepgame --official`` against a real HTTP server on 127.0.0.1 that serves
copies of the official files (../shared) in the release's layout: a good download (then the
cache serves it with the server gone), a corrupt file, a server that is down, and bad flags."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading

import pytest

from raypost.cli import main


@pytest.fixture
def mirror(tmp_path, stepgame_dir):
    """A folder laid out like the release's Dataset/CompleteVersion, served over HTTP."""
    root = tmp_path / "mirror"
    for setting in ("clean", "noise"):
        (root / setting).mkdir(parents=True)
        for k in (1, 2):
            shutil.copy(stepgame_dir / setting / f"qa{k}_valid.json", root / setting)
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", server
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYPOST_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RAYPOST_STEPGAME_URL", raising=False)
    return tmp_path / "cache" / "stepgame"


def files_under(path):
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()) if path.exists() else []


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def test_download_verifies_caches_and_copies(tmp_path, capsys, mirror, cache, stepgame_dir):
    root, url, server = mirror
    out = tmp_path / "data"
    code, lines, _ = run(capsys, "data", "stepgame", "--official", "--split", "valid", "--noise", "--k", "1-2",
                         "--out", str(out), "--url-base", url)
    assert code == 0 and lines == [f"wrote {out / 'qa1_valid.json'} (official release, sha256 verified)",
                                   f"wrote {out / 'qa2_valid.json'} (official release, sha256 verified)"]
    for k in (1, 2):
        assert (out / f"qa{k}_valid.json").read_bytes() == (stepgame_dir / "noise" / f"qa{k}_valid.json").read_bytes()
    assert files_under(cache) == ["noise/qa1_valid.json", "noise/qa2_valid.json"]

    server.shutdown()  # the source is gone: the cache answers
    again = tmp_path / "again"
    code, _, _ = run(capsys, "data", "stepgame", "--official", "--noise", "--k", "2", "--out", str(again),
                     "--url-base", url)
    assert code == 0 and files_under(again) == ["qa2_valid.json"]  # --split valid is the default


def test_a_corrupt_file_is_refused_and_nothing_is_kept(tmp_path, capsys, mirror, cache):
    root, url, _ = mirror
    bad = root / "clean" / "qa2_valid.json"
    bad.write_bytes(bad.read_bytes().replace(b'"left"', b'"right"', 1))
    got = hashlib.sha256(bad.read_bytes()).hexdigest()
    out = tmp_path / "data"
    code, _, err = run(capsys, "data", "stepgame", "--official", "--k", "1-2", "--out", str(out), "--url-base", url)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"raypost: error: {url}/clean/qa2_valid.json: checksum mismatch for qa2_valid.json "
                             f"(sha256 {got[:16]}..., pinned ")
    assert files_under(out) == []  # qa1 verified fine, but nothing is copied until every file is
    assert files_under(cache) == ["clean/qa1_valid.json"]  # no partial or unverified file


def test_a_cached_file_that_changed_is_fetched_again(tmp_path, capsys, mirror, cache):
    _, url, _ = mirror
    assert run(capsys, "data", "stepgame", "--official", "--k", "1", "--out", str(tmp_path / "a"), "--url-base", url)[0] == 0
    (cache / "clean" / "qa1_valid.json").write_text("{}")
    assert run(capsys, "data", "stepgame", "--official", "--k", "1", "--out", str(tmp_path / "b"), "--url-base", url)[0] == 0
    assert (tmp_path / "b" / "qa1_valid.json").read_bytes() == (tmp_path / "a" / "qa1_valid.json").read_bytes()


def test_a_server_that_is_down_is_one_line_naming_the_url(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    code, _, err = run(capsys, "data", "stepgame", "--official", "--k", "3", "--out", str(tmp_path / "d"),
                       "--url-base", url)
    assert code == 4 and len(err) == 1 and err[0].startswith(f"raypost: error: cannot fetch {url}/clean/qa3_valid.json: ")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--split", "dev"], "--split 'dev': the official release has train, valid, test"),
    (["--k", "11"], "--k='11' must name k values between 1 and 10"),
    (["--split", "test"], "--split test: raypost has no pinned checksum for clean/qa1_test.json, so it cannot verify it "
                          "(pinned: the valid files, k = 1..10, clean and noise)"),
    (["--n", "5"], "--n is for generated data; the --official files are used whole"),
])
def test_bad_official_flags(tmp_path, capsys, flags, expected):
    # a later --k replaces the first one (argparse)
    code, _, err = run(capsys, "data", "stepgame", "--official", "--k", "1", *flags, "--out", str(tmp_path / "d"),
                       "--url-base", "http://127.0.0.1:1")
    assert code == 2 and err == [f"raypost: error: {expected}"]
    assert not (tmp_path / "d").exists()
