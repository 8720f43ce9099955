"""The rating web server: standard-library HTTP, one page, a small JSON API, ratings into SQLite.

Routes (all answers JSON except the page and the images)::

    GET  /                       the rating page (plfw.mos.page)
    GET  /api/next?rater=NAME    register or resume NAME; the next item and progress
    POST /api/rate               {"rater", "item", "score", "elapsed_ms"?}: store, then as /api/next
    GET  /img/<id>               one study image, by its opaque id

The server decides the order (plfw.mos.order) and stores each rating before it answers, so the
browser keeps no state beyond the rater's name; malformed requests get a 4xx and the server
goes on. Hostile requests meet the same answers: images are found only by their id in the
manifest (never by a path), and a manifest entry that points outside ``images/`` is not served;
a body larger than ``MAX_BODY`` is refused unread; a client that declares more body than it
sends is dropped after ``request_timeout`` seconds (408) while other raters are served on their
own threads; a rating from a name that never opened ``/api/next`` is refused (404). A full disk
answers 507 (the rating was not stored, nothing else changes) and the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import threading
import unicodedata
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from plfw.errors import UserError
from plfw.mos.db import RatingsDB
from plfw.mos.order import presentation_order
from plfw.mos.page import PAGE
from plfw.mos.study import Study, load_study

MAX_BODY = 4096
MAX_NAME = 40
LABELS = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}


class BadRequest(Exception):
    """A client mistake, answered with ``status`` and a JSON error message."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class MosServer(ThreadingHTTPServer):
    """Serves one study; one thread per request (daemon threads, so Ctrl-C is never held up)."""

    daemon_threads = True

    def __init__(self, study: Study, address: tuple[str, int] = ("127.0.0.1", 0),
                 log: bool = False, request_timeout: float = 30.0) -> None:
        self.study = study
        self.request_timeout = request_timeout
        self.images = (study.root / "images").resolve()
        self.db = RatingsDB(study.db_path)
        self.log = log
        self._orders: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        super().__init__(address, MosHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def state(self, rater: str) -> dict[str, Any]:
        """Progress and the next item for ``rater`` (registered on first sight)."""
        rid, index = self.db.rater(rater)
        with self._lock:
            order = self._orders.get(rater)
            if order is None:
                order = self._orders[rater] = presentation_order(self.study, rater, index)
        rated = self.db.rated(rid)
        todo = [i for i in order if i not in rated]
        n_cal = len(self.study.calibration_items)
        state: dict[str, Any] = {
            "rater": rater, "total": len(order) - n_cal, "calibration": n_cal,
            "done": sum(1 for i in order[n_cal:] if i in rated),
            "calibrated": sum(1 for i in order[:n_cal] if i in rated),
            "item": None, "prefetch": todo[1] if len(todo) > 1 else None,
        }
        if todo:
            item = self.study.items[todo[0]]
            state["item"] = {"id": item.id, "phase": item.phase, "anchor": item.anchor,
                             "anchor_label": LABELS.get(item.anchor or 0)}
        return state

    def rate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Validate and store one rating, then return the rater's new state."""
        rater = check_rater(body.get("rater"))
        item_id, score = body.get("item"), body.get("score")
        item = self.study.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise BadRequest("unknown item", HTTPStatus.NOT_FOUND)
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise BadRequest("score must be an integer from 1 to 5")
        if item.phase == "calibration" and score != item.anchor:
            raise BadRequest(f"calibration item: its score is {item.anchor}")
        elapsed = body.get("elapsed_ms")
        if isinstance(elapsed, bool) or not isinstance(elapsed, int | float) or elapsed < 0:
            elapsed = None
        rid = self.db.find_rater(rater)
        if rid is None:
            raise BadRequest("unknown rater: open the rating page and enter your name first",
                             HTTPStatus.NOT_FOUND)
        self.db.add(rid, item.id, item.phase, score, None if elapsed is None else int(elapsed))
        return self.state(rater)

    def disk_full(self, exc: sqlite3.Error) -> bool:
        """Whether a database error means the study's disk is full: SQLITE_FULL, or an I/O
        error (SQLite reports a full disk while growing its WAL index as SQLITE_IOERR_SHMSIZE,
        or as a failed write) with less than 1 MiB left where the study lives."""
        name = str(getattr(exc, "sqlite_errorname", ""))
        if name == "SQLITE_FULL":
            return True
        try:
            return name.startswith("SQLITE_IOERR") and shutil.disk_usage(
                self.study.root).free < 2**20
        except OSError:
            return False

    def image_path(self, item_id: str) -> Path:
        """The file of one item, only if the manifest puts it inside the study's images/."""
        item = self.study.items.get(item_id)
        path = (self.study.root / item.file).resolve() if item is not None else None
        if path is None or path.parent != self.images or not path.is_file():
            raise BadRequest("no such image", HTTPStatus.NOT_FOUND)
        return path


def check_rater(name: Any) -> str:
    """A rater name: 1-40 printable characters after trimming."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("rater name missing")
    name = name.strip()
    if len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise BadRequest(f"rater name must be 1-{MAX_NAME} printable characters")
    return name


class MosHandler(BaseHTTPRequestHandler):
    server: MosServer
    server_version = "plfw-mos"
    timeout = 30  # a stalled client frees its thread after this many seconds

    def setup(self) -> None:
        self.timeout = self.server.request_timeout  # read by StreamRequestHandler.setup
        super().setup()

    def do_GET(self) -> None:  # http.server's naming
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _guard(self, handler: Any) -> None:
        try:
            handler()
        except BadRequest as exc:
            self._json({"error": str(exc)}, exc.status)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except TimeoutError:  # declared more body than it sent: drop it, free the thread
            self.close_connection = True
            self._json({"error": "request timed out"}, HTTPStatus.REQUEST_TIMEOUT)
        except sqlite3.OperationalError as exc:
            full = self.server.disk_full(exc)
            self.log_error("ratings database: %s (%s)", exc, getattr(exc, "sqlite_errorname", ""))
            self._json({"error": "the study's disk is full: the rating was not stored; "
                                 "tell the organiser" if full else
                                 "the ratings database is busy or unavailable: the rating "
                                 "was not stored; try again"},
                       HTTPStatus.INSUFFICIENT_STORAGE if full
                       else HTTPStatus.SERVICE_UNAVAILABLE)
        except Exception as exc:  # one bad request must not take the server down
            self.log_error("internal error: %r", exc)
            self._json({"error": "internal error"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _get(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/":
            self._send(PAGE.encode(), "text/html; charset=utf-8", cache="no-store")
        elif url.path == "/api/next":
            rater = parse_qs(url.query).get("rater", [None])[0]
            self._json(self.server.state(check_rater(rater)))
        elif url.path.startswith("/img/"):
            data = self.server.image_path(url.path[5:]).read_bytes()
            self._send(data, "image/png", cache="private, max-age=86400")
        else:
            raise BadRequest("not found", HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        if urlsplit(self.path).path != "/api/rate":
            raise BadRequest("not found", HTTPStatus.NOT_FOUND)
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest("Content-Length required", HTTPStatus.LENGTH_REQUIRED)
        try:
            n = int(length)
        except ValueError:
            raise BadRequest("bad Content-Length") from None
        if not 0 <= n <= MAX_BODY:
            raise BadRequest("request body too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        try:
            body = json.loads(self.rfile.read(n))
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("body is not valid JSON") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        self._json(self.server.rate(body))

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(json.dumps(obj).encode(), "application/json", status, cache="no-store")

    def _send(self, data: bytes, ctype: str, status: HTTPStatus = HTTPStatus.OK,
              cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log:
            super().log_message(format, *args)

    def log_error(self, format: str, *args: Any) -> None:
        super().log_message(format, *args)


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000,
          log: bool = False) -> int:
    """Run the server until Ctrl-C; prints the URL (with the real port when ``port`` is 0)."""
    study = load_study(study_dir)
    try:
        server = MosServer(study, (host, port), log=log)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                        f"try another --port") from None
    except sqlite3.Error as exc:
        raise UserError(f"{study.db_path}: cannot open the ratings database ({exc})") from None
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach this machine can rate",
              file=sys.stderr)
    print(f"MOS study {study.root} ({len(study.images)} images x {len(study.methods)} versions "
          f"to rate): open {server.url}  (Ctrl-C to stop; ratings are saved as given)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print(f"stopped; {len(server.db.all())} ratings in {study.db_path}")
    return 0
