"""Downloads against a real HTTP server on 127.0.0.1: good files, a wrong checksum, a transfer that
stops half-way, a dead mirror; the destination only ever holds verified files."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from test_data_helpers import layout_for, tiny_idx_files

from noprop.cli import main
from noprop.data import CATALOG, DataError, load_dataset
from noprop.data.catalog import DataFile
from noprop.data.download import download_file

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
FILES = tiny_idx_files()


class _Handler(BaseHTTPRequestHandler):
    """``/good/NAME``: the file; ``/bad/NAME``: same length, other bytes; ``/half/NAME``: announces
    the full length, sends half, hangs up; anything else: 404."""

    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.requests.append(self.path)
        kind, _, name = self.path.strip("/").partition("/")
        body = FILES.get(name, PAYLOAD if name == "payload.bin" else None)
        if body is None or kind not in ("good", "bad", "half"):
            self.send_error(404)
            return
        if kind == "bad":
            body = bytes(b ^ 0x01 for b in body)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if kind == "half" else body)
        if kind == "half":
            self.close_connection = True

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _file(*mirrors: str) -> DataFile:
    return DataFile("payload.bin", hashlib.md5(PAYLOAD).hexdigest(), len(PAYLOAD), mirrors)


def test_download_writes_the_verified_file_and_nothing_else(server: str, tmp_path: Path) -> None:
    path = download_file(_file(f"{server}/good/"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["payload.bin"]


def test_wrong_checksum_mirror_is_skipped_for_the_next(server: str, tmp_path: Path) -> None:
    path = download_file(_file(f"{server}/bad/", f"{server}/good/"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["payload.bin"]


def test_failed_mirrors_leave_no_file_and_say_why(server: str, tmp_path: Path) -> None:
    mirrors = (f"{server}/half/", f"{server}/bad/", f"{server}/nothing-here/")
    with pytest.raises(DataError) as err:
        download_file(_file(*mirrors), tmp_path, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("could not download payload.bin")
    assert f"{server}/half/payload.bin: " in msg and ("IncompleteRead" in msg or "got 51200 bytes" in msg)
    assert f"{server}/bad/payload.bin: md5 " in msg and "does not match the official" in msg
    assert f"{server}/nothing-here/payload.bin: HTTP 404" in msg
    assert str(tmp_path / "payload.bin") in msg  # where to put it by hand
    assert list(tmp_path.iterdir()) == []  # no partial or unverified file is left behind


def test_offline_error_names_the_file_and_its_destination(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"could not download payload.bin \(http://127.0.0.1:9/payload.bin: "):
        download_file(_file("http://127.0.0.1:9/"), tmp_path, progress=False)  # port 9: nobody listens
    assert list(tmp_path.iterdir()) == []


def test_existing_corrupt_file_is_reported_and_left_alone(server: str, tmp_path: Path) -> None:
    (tmp_path / "payload.bin").write_bytes(b"not it")
    with pytest.raises(DataError, match=r"payload\.bin is truncated"):
        download_file(_file(f"{server}/good/"), tmp_path, progress=False)
    assert (tmp_path / "payload.bin").read_bytes() == b"not it"


@pytest.fixture
def served_mnist(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mnist`` in the catalog points at tiny IDX files on the local server (their md5s, ours)."""
    layout = layout_for(FILES, mirrors=(f"{server}/half/", f"{server}/good/"))
    monkeypatch.setitem(CATALOG, "mnist", dataclasses.replace(CATALOG["mnist"], layouts=(layout,)))


def test_missing_dataset_is_downloaded_into_the_user_cache(
    served_mnist: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NOPROP_DATA", raising=False)
    data = load_dataset("mnist", progress=False)
    assert data.train_x.shape == (40, 1, 28, 28)
    cached = tmp_path / "noprop" / "data" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(FILES)  # only the verified files
    assert all((cached / n).read_bytes() == b for n, b in FILES.items())


def test_offline_cache_error_says_what_is_missing_where_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = layout_for(FILES, mirrors=("http://127.0.0.1:9/",))  # nobody listens on port 9
    monkeypatch.setitem(CATALOG, "mnist", dataclasses.replace(CATALOG["mnist"], layouts=(layout,)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("NOPROP_DATA", raising=False)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", progress=False)
    cache = tmp_path / "noprop" / "data"
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"mnist: no data found (looked in {cache} and {cache / 'mnist'}")
    assert f"put the official files in {cache / 'mnist'}" in msg
    assert "downloading failed: could not download train-images-idx3-ubyte.gz" in msg
    assert list((cache / "mnist").iterdir()) == []


def test_explicit_data_dir_is_never_downloaded_into(served_mnist: None, tmp_path: Path) -> None:
    _Handler.requests.clear()
    with pytest.raises(DataError, match="noprop data download mnist --data-dir"):
        load_dataset("mnist", tmp_path)
    assert _Handler.requests == [] and list(tmp_path.iterdir()) == []


def test_cli_download_then_list_and_verify(served_mnist: None, tmp_path: Path, capsys) -> None:
    assert main(["data", "download", "mnist", "--data-dir", str(tmp_path), "-q"]) == 0
    assert f"mnist: verified in {tmp_path / 'mnist'}" in capsys.readouterr().out
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert any(line.split()[:2] == ["mnist", "verified"] for line in listing.splitlines())
    assert any(line.split()[:2] == ["cifar-10", "missing"] for line in listing.splitlines())
    assert main(["data", "verify", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert "mnist: readable: 40 train / 20 test images of 1x28x28, 10 classes" in capsys.readouterr().out
    # break one file: list and verify now fail (exit 1) and name it; the file stays
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-3])
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 1
    assert "CORRUPT" in capsys.readouterr().out
    assert main(["data", "verify", "--data-dir", str(tmp_path)]) == 1
    assert f"FAILED  {labels} is truncated" in capsys.readouterr().out
    assert labels.exists()


def test_cli_download_of_unknown_dataset_is_a_one_line_error(capsys) -> None:
    assert main(["data", "download", "imagenet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'imagenet'" in err
