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

Cross-site requests are refused (403): a ``Host`` that is not an address this server serves (DNS
rebinding), an ``Origin`` other than the server's own, or a browser's ``Sec-Fetch-Site`` saying
``cross-site`` / ``same-site`` (a form on another site posting ``text/plain`` carries them). A
rating must be of the item the server handed out (calibration first, then the rater's order): any
other item is refused (409) unless it is already rated (a resent rating is stored once).
``elapsed_ms`` must be a finite number of milliseconds from 0 to ``MAX_ELAPSED_MS`` (else 400,
nothing stored). A client that disconnects early costs no traceback in the log.
"""

from __future__ import annotations

import ipaddress
import json
import math
import shutil
import socket
import sqlite3
import sys
import threading
import unicodedata
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from plfw.core.errors import UserError
from plfw.mos.db import RatingsDB
from plfw.mos.order import presentation_order
from plfw.mos.page import PAGE
from plfw.mos.study import Study, load_study

MAX_BODY = 4096
MAX_NAME = 40
MAX_ELAPSED_MS = 10**11  # about three years: anything above is not a time a rater took
LABELS = {1: "bad", 2: "poor", 3: "fair", 4: "good", 5: "excellent"}


class BadRequest(Exception):
    """A client mistake, answered with ``status`` and a JSON error message."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


class MosServer(ThreadingHTTPServer):
    """Serves one study; one thread per request (daemon threads, so Ctrl-C is never held up)."""

    daemon_threads = True
    # socketserver's default backlog of 5 resets connections when a room of raters (browsers
    # open several connections each) arrives at once; the test with 20 raters failed 1 run in 4
    request_queue_size = 128

    def __init__(self, study: Study, address: tuple[str, int] = ("127.0.0.1", 0),
                 log: bool = False, request_timeout: float = 30.0,
                 allow_hosts: tuple[str, ...] = ()) -> None:
        self.study = study
        self.listen_host = address[0].strip("[]").lower()
        self.allow_hosts = {h.strip("[]").lower() for h in allow_hosts}
        self.request_timeout = request_timeout
        self.images = (study.root / "images").resolve()
        self.db = RatingsDB(study.db_path)
        self.log = log
        self._orders: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        super().__init__(address, MosHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback for any exception a request raises outside the
        handler's own try (reading the request line or headers, flushing the answer): a client
        that went away is not worth a line; anything else gets one."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return
        print(f"plfw mos: request from {client_address[0]} failed: {exc!r}", file=sys.stderr)

    def host_ok(self, host: str | None) -> bool:
        """Whether a request's ``Host`` names this server: its port, and a name it is reached
        by (the address it listens on; loopback names when it listens on loopback; any IP
        address and this machine's names when it listens on all interfaces; ``--allow-host``).
        A name that is not one of these is how DNS rebinding reaches a server on loopback."""
        url = _netloc(host)
        if url is None or url.hostname is None:
            return False
        try:
            port = url.port or 80
        except ValueError:
            return False
        if port != self.server_address[1]:
            return False
        name = url.hostname.rstrip(".")
        if name in self.allow_hosts or name == self.listen_host:
            return True
        try:
            bound = ipaddress.ip_address(self.server_address[0])
        except ValueError:
            return False
        loopback = {"localhost", "127.0.0.1", "::1"}
        if bound.is_loopback:
            return name in loopback
        if bound.is_unspecified:
            try:
                ipaddress.ip_address(name)
                return True  # an address cannot be rebound to another machine
            except ValueError:
                pass
            return name in loopback or name in _machine_names()
        return name == str(bound)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def state(self, rater: str) -> dict[str, Any]:
        """Progress and the next item for ``rater`` (registered on first sight)."""
        rid, order = self._order(rater)
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
        elapsed = check_elapsed(body.get("elapsed_ms"))
        rid = self.db.find_rater(rater)
        if rid is None:
            raise BadRequest("unknown rater: open the rating page and enter your name first",
                             HTTPStatus.NOT_FOUND)
        self._check_turn(rater, rid, item.id)
        self.db.add(rid, item.id, item.phase, score, elapsed)
        return self.state(rater)

    def _check_turn(self, rater: str, rid: int, item_id: str) -> None:
        """Refuse (409) an item that is not the rater's next one: calibration comes first, then
        the order the server hands out. An item already rated passes (the database keeps the
        first rating), so a resent or double-clicked rating is harmless."""
        rated = self.db.rated(rid)
        if item_id in rated:
            return
        _, order = self._order(rater)
        todo = [i for i in order if i not in rated]
        if todo and todo[0] == item_id:
            return
        n_cal = len(self.study.calibration_items)
        cal_done = sum(1 for i in order[:n_cal] if i in rated)
        if cal_done < n_cal and item_id not in order[:n_cal]:
            raise BadRequest(f"calibration first: {cal_done} of {n_cal} calibration items rated; "
                             f"rate the item the page shows (reload it to get it)",
                             HTTPStatus.CONFLICT)
        raise BadRequest("out of order: this is not the item the server handed out next; "
                         "rate the item the page shows (reload it to get it)",
                         HTTPStatus.CONFLICT)

    def _order(self, rater: str) -> tuple[int, list[str]]:
        """(rater id, presentation order) for ``rater``, registered on first sight."""
        rid, index = self.db.rater(rater)
        with self._lock:
            order = self._orders.get(rater)
            if order is None:
                order = self._orders[rater] = presentation_order(self.study, rater, index)
        return rid, order

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


def check_elapsed(value: Any) -> int | None:
    """``elapsed_ms``: absent or null, or a finite number of milliseconds from 0 to
    ``MAX_ELAPSED_MS`` (JSON's ``1e999`` is inf, Python's parser takes ``NaN``)."""
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not (isinstance(value, int) or math.isfinite(value))
            or not 0 <= value <= MAX_ELAPSED_MS):
        raise BadRequest(f"elapsed_ms must be a number of milliseconds from 0 to "
                         f"{MAX_ELAPSED_MS:.0e}; the rating was not stored")
    return int(value)


def _netloc(value: str | None) -> SplitResult | None:
    """``host[:port]`` parsed, or None for a missing or malformed one."""
    if not value or any(c in value for c in "/?#@\\ ") or not value.isascii():
        return None
    try:
        return urlsplit("//" + value.lower())
    except ValueError:
        return None


def _machine_names() -> set[str]:
    names = {socket.gethostname().lower()}
    try:
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return names


def check_rater(name: Any) -> str:
    """A rater name: 1-40 printable characters after trimming."""
    if not isinstance(name, str) or not name.strip():
        raise BadRequest("rater name missing")
    name = name.strip()
    if len(name) > MAX_NAME or any(unicodedata.category(c).startswith("C") for c in name):
        raise BadRequest(f"rater name must be 1-{MAX_NAME} printable characters")
    return name


_DEFAULT_PORT = {"http": 80, "https": 443}


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

    def _check_host(self) -> None:
        if not self.server.host_ok(self.headers.get("Host")):
            self.close_connection = True
            raise BadRequest("Host is not an address of this server; open the address "
                             "`plfw mos serve` printed (or add --allow-host NAME)",
                             HTTPStatus.FORBIDDEN)

    def _check_same_origin(self) -> None:
        """A request to the API must come from the rating page itself (or from no browser)."""
        self._check_host()
        origin = self.headers.get("Origin")
        if origin is not None:
            o = urlsplit(origin.strip().lower()) if origin.isascii() else None
            h = _netloc(self.headers.get("Host"))
            try:
                same = (o is not None and h is not None and o.scheme in ("http", "https")
                        and o.hostname == h.hostname and not o.path.strip("/")
                        and (o.port or _DEFAULT_PORT[o.scheme])
                        == (h.port or _DEFAULT_PORT[o.scheme]))
            except ValueError:  # a port that is not a number
                same = False
            if not same:
                self.close_connection = True
                raise BadRequest("cross-origin request refused", HTTPStatus.FORBIDDEN)
        if self.headers.get("Sec-Fetch-Site", "").strip().lower() in ("cross-site", "same-site"):
            self.close_connection = True
            raise BadRequest("cross-site request refused", HTTPStatus.FORBIDDEN)

    def _get(self) -> None:
        url = urlsplit(self.path)
        self._check_host()
        if url.path == "/":
            self._send(PAGE.encode(), "text/html; charset=utf-8", cache="no-store")
        elif url.path == "/api/next":
            self._check_same_origin()
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
        data = self.rfile.read(n)
        self._check_same_origin()  # after reading: the connection stays in step
        try:
            body = json.loads(data)
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
          log: bool = False, allow_hosts: tuple[str, ...] = ()) -> int:
    """Run the server until Ctrl-C; prints the URL (with the real port when ``port`` is 0).
    ``allow_hosts``: further names raters reach it by (a reverse proxy's, a DNS name)."""
    study = load_study(study_dir)
    try:
        server = MosServer(study, (host, port), log=log, allow_hosts=allow_hosts)
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
