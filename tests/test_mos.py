"""MOS studies: create (and its errors), presentation order, SQLite storage, statistics, the HTTP
server with real requests (malformed and hostile ones, path traversal, a slow client, 20
concurrent raters under attack, a full disk, a SIGKILLed server) and the report. Requests go to
loopback only and are bounded in number and time."""

from __future__ import annotations

import http.client
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from helpers import fill_disk
from PIL import Image

from plfw.cli import main
from plfw.core.errors import UserError
from plfw.mos import command as cli
from plfw.mos.create import create_study
from plfw.mos.db import RatingsDB
from plfw.mos.order import presentation_order
from plfw.mos.report import write_report
from plfw.mos.server import MosServer, serve
from plfw.mos.stats import (
    holm,
    rankdata,
    rater_consistency,
    spearman,
    summarize,
    t_ppf,
    wilcoxon,
)
from plfw.mos.study import load_study

SIZE = 16  # HR side; LR is SIZE // 4


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """ref/, lr/, m1/, m2/, each with data sets A (2 images) and B (2 images)."""
    rng = np.random.default_rng(0)
    for ds, names in (("A", ("a1", "a2")), ("B", ("b1", "b2"))):
        for name in names:
            hr = rng.integers(0, 256, (SIZE, SIZE, 3))
            _save(tmp_path / "ref" / ds / f"{name}.png", hr)
            _save(tmp_path / "lr" / ds / f"{name}.png", hr[::4, ::4])
            _save(tmp_path / "m1" / ds / f"{name}.png", hr // 2)
            _save(tmp_path / "m2" / ds / f"{name}.jpg", hr)  # another extension is fine
    return tmp_path


def _create(inputs: Path, name: str = "study", **kw):
    methods = {"m1": inputs / "m1", "m2": inputs / "m2"}
    kw.setdefault("lr", inputs / "lr")
    return create_study(inputs / name, methods, inputs / "ref", seed=7, **kw)


@pytest.fixture
def study(inputs: Path):
    return _create(inputs)


# --- create -------------------------------------------------------------------------------


def test_create_writes_a_self_contained_study(study) -> None:
    assert study.methods == ("nearest", "m1", "m2", "original")
    assert study.datasets == ("A", "B")
    assert len(study.main_items) == 4 * 4
    cal = study.calibration_items
    assert [i.anchor for i in cal] == [1, 5] * 3 and {i.phase for i in cal} == {"calibration"}
    assert all(i.anchor is None for i in study.main_items.values())
    for item in study.items.values():
        assert Image.open(study.root / item.file).size == (SIZE, SIZE)
        assert len(item.id) == 16 and int(item.id, 16) >= 0  # random hex: reveals nothing
    assert load_study(study.root) == study
    assert not [p for p in study.root.parent.iterdir() if p.name.startswith(".study.")]


def test_nearest_anchor_from_reference_is_blocky(inputs: Path) -> None:
    study = _create(inputs, lr=None, dataset="A", calibration=0)
    assert study.datasets == ("A",) and not study.calibration_items
    near = np.asarray(Image.open(study.root / study.main_items[("A", "a1", "nearest")].file))
    assert (near == np.repeat(np.repeat(near[::4, ::4], 4, 0), 4, 1)).all()


def test_flat_folders_use_the_dataset_label(tmp_path: Path) -> None:
    for folder in ("ref", "sr"):
        _save(tmp_path / folder / "x.png", np.full((8, 8, 3), 100))
    study = create_study(tmp_path / "s", {"sr": tmp_path / "sr"}, tmp_path / "ref",
                         dataset="Set5", lr=None, calibration=1)
    assert study.images == (("Set5", "x"),)


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "m1" / "B" / "b2.png").unlink(), "m1 ("),
    (lambda p: _save(p / "m1" / "A" / "a1.png", np.zeros((SIZE, SIZE + 4, 3))), "20x16"),
    (lambda p: (p / "m2" / "A" / "a2.jpg").write_bytes(b"not a jpeg"), "a2.jpg: not an image"),
    (lambda p: (p / "m1" / "B" / "b1.png").write_bytes((p / "ref" / "A" / "a1.png").read_bytes()[
        :300]), "b1.png: corrupt or truncated"),
    (lambda p: (p / "lr" / "A" / "a1.png").unlink(), "--lr"),
    (lambda p: _save(p / "lr" / "A" / "a1.png", np.zeros((5, 5, 3))), "LR image is 5x5"),
])
def test_create_errors_are_one_line_and_leave_nothing(inputs: Path, damage, message) -> None:
    damage(inputs)
    with pytest.raises(UserError) as info:
        _create(inputs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (inputs / "study").exists()
    assert not [p for p in inputs.iterdir() if p.name.startswith(".study.")]


def test_create_rejects_bad_arguments(inputs: Path) -> None:
    with pytest.raises(UserError, match="reserved"):
        create_study(inputs / "s", {"original": inputs / "m1"}, inputs / "ref")
    (inputs / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        create_study(inputs / "s", {"m1": inputs / "m1"}, inputs / "empty")
    with pytest.raises(UserError, match="not a folder"):
        create_study(inputs / "s", {"m1": inputs / "m1"}, inputs / "nothing-here")
    _create(inputs)
    with pytest.raises(UserError, match="already exists"):
        _create(inputs)
    with pytest.raises(UserError, match="NAME=DIR"):
        cli._methods(["m1"])
    with pytest.raises(UserError, match="not a MOS study"):
        load_study(inputs / "ref")


def test_cli_create_and_report(inputs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mos", "create", str(inputs / "s"), "--methods", f"m1={inputs / 'm1'}",
                 f"m2={inputs / 'm2'}", "--reference", str(inputs / "ref"), "--lr",
                 str(inputs / "lr")]) == 0
    assert "4 images x 4 versions" in capsys.readouterr().out
    assert main(["mos", "report", str(inputs / "s")]) == 2
    assert "no ratings yet" in capsys.readouterr().err


# --- order and storage -------------------------------------------------------------------


def test_order_is_balanced_across_raters(study) -> None:
    m = len(study.methods)
    n_cal = len(study.calibration_items)
    rounds: dict[tuple, Counter] = {}
    for r in range(m):
        order = presentation_order(study, f"rater{r}", r)
        assert order == presentation_order(study, f"rater{r}", r)  # resumable
        assert order[:n_cal] == [i.id for i in study.calibration_items]
        main = order[n_cal:]
        assert sorted(main) == sorted(i.id for i in study.main_items.values())
        for pos, item_id in enumerate(main):
            item = study.items[item_id]
            rounds.setdefault((item.dataset, item.image, item.method), Counter())[
                pos // len(study.images)] += 1
    # every version of every image was seen once in every round across the m raters
    assert all(c == Counter(range(m)) for c in rounds.values())
    assert presentation_order(study, "x", 0) != presentation_order(study, "y", 0)


def test_db_stores_once_and_checks_scores(tmp_path: Path) -> None:
    db = RatingsDB(tmp_path / "r.sqlite")
    assert db.rater("ann") == (1, 0) and db.rater("bob") == (2, 1) and db.rater("ann") == (1, 0)
    assert db.add(1, "item1", "main", 4, 1200)
    assert not db.add(1, "item1", "main", 2)  # a resent rating does not overwrite
    with pytest.raises(sqlite3.IntegrityError):
        db.add(2, "item1", "main", 6)
    assert [(r.rater, r.score) for r in db.all()] == [("ann", 4)]
    with sqlite3.connect(tmp_path / "r.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# --- statistics ----------------------------------------------------------------------------


def test_t_quantiles_match_tables() -> None:
    for df, t in ((1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423),
                  (120, 1.9799)):
        assert t_ppf(0.975, df) == pytest.approx(t, abs=1e-4)
    assert t_ppf(0.025, 7) == pytest.approx(-2.3646, abs=1e-4)
    s = summarize([3, 4, 5])
    assert (s.mean, s.sd) == (4, 1) and s.low == pytest.approx(4 - 4.3027 / math.sqrt(3), 1e-4)
    assert math.isnan(summarize([2]).low)


def test_wilcoxon_holm_and_ranks() -> None:
    assert wilcoxon(list(range(1, 11))).p == pytest.approx(2 / 1024)
    assert wilcoxon([1, -2, 3, 4, 5, -6, 7, 8, 9, 10]).p == pytest.approx(0.048828125)
    assert wilcoxon([0, 0]).p == 1.0
    ties = [1, 1, 1, -1, 2, 2, 1, 1] * 8  # 64 pairs: normal approximation
    exact, approx = wilcoxon(ties[:60]), wilcoxon(ties)
    assert exact.exact and not approx.exact and 0 < approx.p < 0.01 and 0 < exact.p < 0.01
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert rankdata([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1)
    c = rater_consistency({"a": {"x": 1, "y": 3, "z": 5}, "b": {"x": 2, "y": 3, "z": 4},
                           "c": {"x": 1, "y": 4, "z": 5}, "d": {"x": 5, "y": 3, "z": 1}})
    assert c["a"][0] > 0 and c["d"][0] == pytest.approx(-1) and c["a"][1] == 3


# --- server ----------------------------------------------------------------------------------


@pytest.fixture
def server(study):
    srv = MosServer(study, ("127.0.0.1", 0))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _request(srv, method: str, path: str, body=None, headers=None):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=headers or {})
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    if resp.getheader("Content-Type") == "application/json":
        payload = json.loads(payload)
    return resp.status, payload


def _rate_all(srv, rater: str, score_of=lambda item: 3) -> int:
    """Rate everything as ``rater`` would; returns the number of requests."""
    status, state = _request(srv, "GET", f"/api/next?rater={quote(rater)}")
    n = 0
    while state["item"]:
        item = state["item"]
        assert (item["anchor"] is None) == (item["phase"] == "main")  # the method stays hidden
        score = item["anchor"] or score_of(srv.study.items[item["id"]])
        status, state = _request(srv, "POST", "/api/rate",
                                 {"rater": rater, "item": item["id"], "score": score})
        assert status == 200, state
        n += 1
    return n


def test_server_flow_and_report(server) -> None:
    status, page = _request(server, "GET", "/")
    assert status == 200 and b"Image quality rating" in page and b"http" not in page.split(
        b"<script>")[1]  # no external resources
    status, state = _request(server, "GET", "/api/next?rater=%20ann%20")
    assert state["rater"] == "ann" and state["item"]["phase"] == "calibration"
    assert (state["done"], state["total"], state["calibration"]) == (0, 16, 6)
    first = state["item"]
    status, err = _request(server, "POST", "/api/rate",
                           {"rater": "ann", "item": first["id"], "score": 3})
    assert status == 400 and "calibration" in err["error"]
    status, img = _request(server, "GET", f"/img/{first['id']}")
    assert status == 200 and img.startswith(b"\x89PNG")

    quality = {"nearest": 1, "m1": 2, "m2": 4, "original": 5}
    for i, rater in enumerate(("ann", "bob", "cid")):
        _rate_all(server, rater, lambda item, i=i: max(1, min(5, quality[item.method] + i % 2)))
    _, state = _request(server, "GET", "/api/next?rater=ann")
    assert state["item"] is None and state["done"] == 16

    report = write_report(server.study.root).read_text()
    assert "| m2 | 4.33 | [4.02, 4.65] | 0.49 | 12 | 3 |" in report
    assert "| nearest (anchor) | 1.33 |" in report and "| A | B |" in report
    assert "| bob | 16 | 3.75 | 0.95 |" in report and "Mean rho: 0.98" in report
    assert "| m1 | m2 | 12 | 12 | -2.00 | 0 | 0.00049 | 0.0029 | yes |" in report
    assert (server.study.root / "mos_scores.png").stat().st_size > 1000


def test_busy_port_is_a_user_error(study) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1:.*another --port"):
            serve(study.root, port=taken.getsockname()[1])


def test_malformed_requests_are_rejected_and_server_survives(server) -> None:
    ok = {"rater": "ann", "item": next(iter(server.study.items)), "score": 1}
    cases = [
        ("GET", "/api/next", None, {}, 400),
        ("GET", "/api/next?rater=" + "x" * 41, None, {}, 400),
        ("GET", "/api/next?rater=a%00b", None, {}, 400),
        ("GET", "/nope", None, {}, 404),
        ("GET", "/img/../study.json", None, {}, 404),
        ("POST", "/api/next", b"{}", {}, 404),
        ("POST", "/api/rate", b"{not json", {}, 400),
        ("POST", "/api/rate", b"\xff\xfe", {}, 400),
        ("POST", "/api/rate", b"[1, 2]", {}, 400),
        ("POST", "/api/rate", {**ok, "score": "5"}, {}, 400),
        ("POST", "/api/rate", {**ok, "score": True}, {}, 400),
        ("POST", "/api/rate", {**ok, "score": 9}, {}, 400),
        ("POST", "/api/rate", {**ok, "item": "nope"}, {}, 404),
        ("POST", "/api/rate", {**ok, "item": ["list"]}, {}, 404),
        ("POST", "/api/rate", {**ok, "rater": 5}, {}, 400),
        ("POST", "/api/rate", b"x" * 5000, {}, 413),
        ("POST", "/api/rate", b"{}", {"Content-Length": "-3"}, 413),
        ("POST", "/api/rate", b"{}", {"Content-Length": "abc"}, 400),
        ("DELETE", "/api/rate", None, {}, 501),
    ]
    for method, path, body, headers, expected in cases:
        status, _ = _request(server, method, path, body, headers)
        assert status == expected, (method, path, body)
    for raw in (b"GARBAGE\r\n\r\n", b"POST /api/rate HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64):
        with socket.create_connection(server.server_address[:2], timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            reply = sock.recv(200)
        assert not reply or b"400" in reply or b"411" in reply, reply
    assert server.db.all() == []
    assert _request(server, "GET", "/")[0] == 200


SECRET = b"plfw-secret-outside-the-study"


def _hostile_paths(srv, secret: Path) -> list[str]:
    """URLs that try to reach files outside the study (or its files other than images)."""
    some = next(iter(srv.study.items))
    return [
        "/img/../secret.txt", "/img/../../secret.txt", "/../secret.txt", "/img/..%2fsecret.txt",
        "/img/%2e%2e%2fsecret.txt", "/img/%2e%2e/%2e%2e/secret.txt", "/img/%252e%252e%252f"
        "secret.txt", "/img/..%252fsecret.txt", "/img/" + str(secret), "/img//" + str(secret),
        "/img/%2F" + str(secret).lstrip("/").replace("/", "%2F"), "//" + str(secret),
        "/img/..\\secret.txt", "/img/..%5c..%5csecret.txt", "/img/%5c%5csecret.txt",
        "/study.json", "/ratings.sqlite", "/images/", f"/images/{some}.png",
        f"/img/{some}/../../secret.txt", f"/img/{some}%00.png", f"/img/{some}/", "/img/",
        "/img/images", "/img/%00", "/img/study.json",
        "http://evil.example/img/../secret.txt",
    ]


def test_path_traversal_reads_nothing_outside_the_study(server, inputs: Path) -> None:
    secret = inputs / "secret.txt"
    secret.write_bytes(SECRET)
    for path in _hostile_paths(server, secret):
        status, body = _request(server, "GET", path)
        assert status in (400, 403, 404), (path, status)  # 403: an absolute URL sends its Host
        assert SECRET not in (body if isinstance(body, bytes) else json.dumps(body).encode())
    # a manifest edited to point outside images/ is not served either
    manifest = json.loads((server.study.root / "study.json").read_text())
    for i, target in enumerate(("../../secret.txt", str(secret), "images/../study.json")):
        manifest["items"][i]["file"] = target
    (server.study.root / "study.json").write_text(json.dumps(manifest))
    tampered = MosServer(load_study(server.study.root), ("127.0.0.1", 0))
    thread = threading.Thread(target=tampered.serve_forever, daemon=True)
    thread.start()
    try:
        for item in manifest["items"][:3]:
            status, body = _request(tampered, "GET", f"/img/{item['id']}")
            assert status == 404 and SECRET not in json.dumps(body).encode()
        assert _request(tampered, "GET", f"/img/{manifest['items'][3]['id']}")[0] == 200
    finally:
        tampered.shutdown()
        tampered.server_close()


def test_slow_oversized_and_unknown_requests_do_not_hold_the_server(study) -> None:
    srv = MosServer(study, ("127.0.0.1", 0), request_timeout=1.0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        # declares 100 bytes of body, sends 1, then stalls
        slow = socket.create_connection(srv.server_address[:2], timeout=10)
        slow.sendall(b"POST /api/rate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        began = time.monotonic()
        assert _request(srv, "GET", "/")[0] == 200  # others are served meanwhile
        assert time.monotonic() - began < 1.0
        reply = slow.recv(200)
        slow.close()
        assert b"408" in reply and time.monotonic() - began < 8
        # a body declared too large is refused unread; an absurd URL or header set too
        cases = [({"Content-Length": str(10**12)}, "/api/rate", 413),
                 ({}, "/api/next?rater=" + "a" * 70_000, 414),
                 ({f"X-{i}": "1" for i in range(120)}, "/", 431),
                 ({"X-Big": "b" * 70_000}, "/", 431)]
        for headers, path, expected in cases:
            with socket.create_connection(srv.server_address[:2], timeout=10) as sock:
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode())
                assert str(expected).encode() in sock.recv(200), (path, expected)
        # ratings from a name that never opened the page, of unknown items, out of range
        some = next(i for i in study.items.values() if i.phase == "main")
        _request(srv, "GET", "/api/next?rater=known")
        for body, expected in (({"rater": "ghost", "item": some.id, "score": 3}, 404),
                               ({"rater": "known", "item": "0" * 16, "score": 3}, 404),
                               ({"rater": "known", "item": some.id + "x", "score": 3}, 404),
                               ({"rater": "known", "item": some.id, "score": 0}, 400),
                               ({"rater": "known", "item": some.id, "score": -1}, 400),
                               ({"rater": "known", "item": some.id, "score": 5.5}, 400),
                               ({"rater": "known", "item": some.id, "score": 10**100}, 400)):
            assert _request(srv, "POST", "/api/rate", body)[0] == expected, body
        for raw in (b'{"rater": "known", "item": "%s", "score": NaN}' % some.id.encode(),
                    b'{"rater": "known", "item": "%s", "score": 1e999}' % some.id.encode(),
                    b'{"rater": "known", "item": "%s", "score": 3, "rater": 7}' % some.id.encode(),
                    b'"just a string"', b"null", b"{" * 2000):
            assert _request(srv, "POST", "/api/rate", raw)[0] == 400, raw
        assert srv.db.all() == [] and srv.db.find_rater("ghost") is None
        assert _request(srv, "GET", "/api/next?rater=known")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_full_disk_answers_507_and_the_server_keeps_serving(inputs: Path,
                                                            small_disk: Path) -> None:
    study = create_study(small_disk / "study", {"m1": inputs / "m1"}, inputs / "ref", seed=7,
                         lr=inputs / "lr")
    srv = MosServer(study, ("127.0.0.1", 0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        _, state = _request(srv, "GET", "/api/next?rater=ann")
        body = {"rater": "ann", "item": state["item"]["id"], "score": state["item"]["anchor"]}
        assert _request(srv, "POST", "/api/rate", body)[0] == 200
        _, state = _request(srv, "GET", "/api/next?rater=ann")
        body = {"rater": "ann", "item": state["item"]["id"], "score": state["item"]["anchor"]}
        filler = fill_disk(small_disk)
        status, err = _request(srv, "POST", "/api/rate", body)
        assert status == 507 and "disk is full" in err["error"]
        assert _request(srv, "GET", "/")[0] == 200
        assert _request(srv, "GET", f"/img/{body['item']}")[0] == 200
        filler.unlink()
        status, state = _request(srv, "POST", "/api/rate", body)  # the rater retries
        assert status == 200 and state["calibrated"] == 2
    finally:
        srv.shutdown()
        srv.server_close()
    assert len(RatingsDB(study.db_path).all()) == 2


def test_concurrent_raters_do_not_clash(server, inputs: Path) -> None:
    """20 raters at once while another client sends hostile requests: every rating is stored
    exactly once, nothing outside the study is read, and the server still serves."""
    errors, counts, leaks = [], {}, []
    secret = inputs / "secret.txt"
    secret.write_bytes(SECRET)

    def rater(name: str) -> None:
        try:
            counts[name] = _rate_all(server, name)
        except Exception as exc:  # reported below: a failing thread must fail the test
            errors.append(exc)

    def attacker() -> None:
        for path in _hostile_paths(server, secret) * 2:
            try:
                status, body = _request(server, "GET", path)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                if status == 200 or SECRET in raw:
                    leaks.append(path)
                _request(server, "POST", "/api/rate", b"{" * 3000)
            except Exception as exc:
                errors.append(exc)

    n = 20
    threads = [threading.Thread(target=rater, args=(f"r{i}",)) for i in range(n)]
    threads.append(threading.Thread(target=attacker))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and not leaks and sum(counts.values()) == n * 22
    ratings = server.db.all()
    assert len(ratings) == n * 22 and len({(r.rater, r.item) for r in ratings}) == n * 22
    # distinct join indices, hence distinct rotations
    assert sorted(server.db.rater(f"r{i}")[1] for i in range(n)) == list(range(n))

    # the same rating sent twice at once is stored once
    _, state = _request(server, "GET", "/api/next?rater=twin")
    body = {"rater": "twin", "item": state["item"]["id"], "score": state["item"]["anchor"]}
    pair = [threading.Thread(target=_request, args=(server, "POST", "/api/rate", body))
            for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(10)
    assert sum(r.rater == "twin" for r in server.db.all()) == 1


def test_sigkilled_server_keeps_every_acknowledged_rating(study) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "plfw", "mos", "serve", str(study.root),
                             "--port", "0"], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        url = line.split("open ")[1].split()[0]
        host, port = url.removeprefix("http://").rstrip("/").split(":")

        class Remote:
            server_address = (host, int(port))

        acknowledged = 0
        _, state = _request(Remote, "GET", "/api/next?rater=kim")
        while acknowledged < 10:
            item = state["item"]
            status, state = _request(Remote, "POST", "/api/rate", {
                "rater": "kim", "item": item["id"], "score": item["anchor"] or 2})
            assert status == 200
            acknowledged += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.stdout.close()
    assert len(RatingsDB(study.db_path).all()) == acknowledged
    with sqlite3.connect(study.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "4 ratings by 1 rater" in write_report(study.root, plot=False).read_text()


# --- cross-site requests, order, elapsed time, report escaping, disconnects (issue 36) -------


def test_cross_site_requests_are_refused_and_the_page_still_works(server) -> None:
    port = server.server_address[1]
    own = f"http://127.0.0.1:{port}"
    _, state = _request(server, "GET", "/api/next?rater=ann")
    first = state["item"]
    body = json.dumps({"rater": "ann", "item": first["id"], "score": first["anchor"]}).encode()
    plain = {"Content-Type": "text/plain"}  # what a form on another site can post unasked
    refused = [
        {**plain, "Origin": "http://evil.example"},
        {**plain, "Origin": "null"},
        {**plain, "Origin": f"http://127.0.0.1:{port + 1}"},
        {**plain, "Origin": f"https://127.0.0.1.evil.example:{port}"},
        {**plain, "Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {**plain, "Sec-Fetch-Site": "cross-site"},  # a browser that sent no Origin
        {**plain, "Host": f"evil.example:{port}"},  # DNS rebinding: evil.example -> 127.0.0.1
        {**plain, "Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
        {**plain, "Host": f"127.0.0.1:{port + 1}"},
        {**plain, "Host": "127.0.0.1"},
    ]
    for headers in refused:
        status, err = _request(server, "POST", "/api/rate", body, headers)
        assert status == 403, headers
    # no Host at all (HTTP/1.0)
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(b"POST /api/rate HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        assert b" 403 " in sock.recv(200)
    # registering a rater and reading the page need the right Host / origin too
    assert _request(server, "GET", "/api/next?rater=mallory", None,
                    {"Origin": "http://evil.example"})[0] == 403
    assert _request(server, "GET", "/api/next?rater=mallory", None,
                    {"Sec-Fetch-Site": "cross-site"})[0] == 403
    assert _request(server, "GET", "/", None, {"Host": f"evil.example:{port}"})[0] == 403
    assert server.db.all() == [] and server.db.find_rater("mallory") is None
    # the rating page's own requests: same origin, by its address or by localhost
    page = {"Content-Type": "application/json", "Origin": own, "Sec-Fetch-Site": "same-origin"}
    status, state = _request(server, "POST", "/api/rate", body, page)
    assert status == 200 and state["calibrated"] == 1
    second = state["item"]
    local = {"Host": f"localhost:{port}", "Origin": f"http://LOCALHOST:{port}"}
    status, state = _request(server, "POST", "/api/rate", {
        "rater": "ann", "item": second["id"], "score": second["anchor"]}, local)
    assert status == 200 and state["calibrated"] == 2
    assert _request(server, "GET", "/api/next?rater=ann", None,
                    {"Host": f"localhost:{port}", "Sec-Fetch-Site": "same-origin"})[0] == 200
    assert len(server.db.all()) == 2


def test_items_are_rated_in_the_order_handed_out(server) -> None:
    _, state = _request(server, "GET", "/api/next?rater=ann")
    cal = [i for i in server.study.items.values() if i.phase == "calibration"]
    main = next(i for i in server.study.items.values() if i.phase == "main")
    status, err = _request(server, "POST", "/api/rate", {"rater": "ann", "item": main.id,
                                                         "score": 4})
    assert status == 409 and "calibration first: 0 of 6" in err["error"]
    later = next(i for i in cal if i.id != state["item"]["id"])
    status, err = _request(server, "POST", "/api/rate", {"rater": "ann", "item": later.id,
                                                         "score": later.anchor})
    assert status == 409 and "out of order" in err["error"]
    assert server.db.all() == []
    for _ in cal:  # calibration done, in the order given
        item = state["item"]
        status, state = _request(server, "POST", "/api/rate", {
            "rater": "ann", "item": item["id"], "score": item["anchor"]})
        assert status == 200
    nxt = state["item"]
    skipped = state["prefetch"]  # the one after next
    status, err = _request(server, "POST", "/api/rate", {"rater": "ann", "item": skipped,
                                                         "score": 2})
    assert status == 409 and "out of order" in err["error"]
    status, state = _request(server, "POST", "/api/rate", {"rater": "ann", "item": nxt["id"],
                                                           "score": 2})
    assert status == 200 and state["done"] == 1
    # a resent rating of an item already rated is answered and stored once
    status, state = _request(server, "POST", "/api/rate", {"rater": "ann", "item": nxt["id"],
                                                           "score": 5})
    assert status == 200 and state["done"] == 1
    assert [r.score for r in server.db.all() if r.item == nxt["id"]] == [2]
    assert len(server.db.all()) == len(cal) + 1


def test_elapsed_ms_out_of_range_is_400_and_loses_nothing(server) -> None:
    _, state = _request(server, "GET", "/api/next?rater=ann")
    item = state["item"]
    head = b'{"rater": "ann", "item": "%s", "score": %d, "elapsed_ms": ' % (
        item["id"].encode(), item["anchor"])
    for bad in (b"1e300", b"1e999", b"-1e999", b"NaN", b"Infinity", b"-5", b"1e12", b'"12"',
                b"true", b"[1]"):
        status, err = _request(server, "POST", "/api/rate", head + bad + b"}")
        assert status == 400 and "elapsed_ms" in err["error"], bad
    assert server.db.all() == []
    assert _request(server, "GET", "/")[0] == 200
    status, state = _request(server, "POST", "/api/rate", head + b"1234.6}")  # the retry
    assert status == 200 and state["calibrated"] == 1
    item = state["item"]
    status, state = _request(server, "POST", "/api/rate", {"rater": "ann", "item": item["id"],
                                                           "score": item["anchor"],
                                                           "elapsed_ms": None})
    assert status == 200
    assert [r.elapsed_ms for r in server.db.all()] == [1234, None]


def test_report_escapes_user_text(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        hr = rng.integers(0, 256, (SIZE, SIZE, 3))
        _save(tmp_path / "ref" / f"{name}.png", hr)
        _save(tmp_path / "m1" / f"{name}.png", hr // 2)
    dataset = "S|<i>5</i>"
    study = create_study(tmp_path / "s", {"m1": tmp_path / "m1"}, tmp_path / "ref", lr=None,
                         dataset=dataset, calibration=0, seed=1)
    srv = MosServer(study, ("127.0.0.1", 0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    raters = ["<img src=x onerror=alert(1)>", "a | b", "*bold* _it_ `c` [l](u)\\"]
    try:
        for i, rater in enumerate(raters):
            _rate_all(srv, rater, lambda item, i=i: 1 + (i + len(item.image)) % 5)
    finally:
        srv.shutdown()
        srv.server_close()
    report = write_report(study.root, plot=False).read_text()
    assert "<img" not in report and "<i>" not in report
    assert "&lt;img src=x onerror=alert(1)&gt;" in report and "a \\| b" in report
    assert "\\*bold\\* \\_it\\_ \\`c\\` \\[l\\](u)\\\\" in report
    rows = [line for line in report.splitlines() if line.startswith("|")]
    for table in ("| rater |", "| method |"):
        start = next(i for i, line in enumerate(rows) if line.startswith(table))
        block = [rows[start]]
        for line in rows[start + 1:]:
            if not line.startswith("|---") and line.startswith(("| rater", "| method", "| A ")):
                break
            block.append(line)
        cells = {len(line.replace("\\|", "").split("|")) for line in block}
        assert len(cells) == 1, block  # every row has as many columns as the header
    assert sum(line.startswith("| &lt;img") or line.startswith("| a \\| b") for line in rows) == 2


def test_an_early_disconnect_prints_no_traceback(server, capfd) -> None:
    import struct

    item = next(iter(server.study.items))
    port = server.server_address[1]
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    partial = [b"GET / HTTP/1.1\r\n" + host + b"\r\n", b"GET /img/%s HTTP/1.1\r\n" % (
        item.encode()) + host + b"\r\n", b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: 1",
        b"", b"POST /api/rate HTTP/1.1\r\n" + host + b"Content-Length: 10\r\n\r\n{",
        (b"GET / HTTP/1.1\r\n" + host + b"\r\n") * 50]
    for data in partial:
        sock = socket.create_connection(server.server_address[:2], timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if data:
            sock.sendall(data)
        sock.close()  # SO_LINGER 0: a reset, as a closed tab or a dropped network gives
        time.sleep(0.05)
    time.sleep(0.5)
    assert _request(server, "GET", "/")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
