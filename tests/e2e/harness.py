"""harness.py - what the end-to-end tests of chatd stand on

Starts and stops the real chatd binary (a free port on 127.0.0.1, a temp dir
for the SQLite file, configuration through CHAT_* environment variables),
talks HTTP to it with http.client and WebSocket with python3-websockets 10.4
(legacy asyncio client), and offers a raw socket WebSocket client for what
that library will not do on purpose (never answering a ping).

Only the standard library and Debian's python3-websockets are used.
"""

import asyncio
import base64
import datetime
import http.client
import itertools
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import websockets
from websockets.exceptions import ConnectionClosed

#   Set by test_e2e.py from the command line
CONFIG = {"chatd": None, "backend": "sqlite", "keep": False, "verbose": False, "trace": False}

#   Password hashing made cheap, and limits that get in the way of functional
#   tests raised; classes that test a limit set it small themselves.
FAST_HASH = {
    "CHAT_AUTH_PASSWORD_OPSLIMIT": "1",
    "CHAT_AUTH_PASSWORD_MEMLIMIT_KIB": "8192",
}
NO_RATE_LIMIT = {
    "CHAT_RATE_LIMIT_MESSAGES_PER_SECOND": "100000",
    "CHAT_RATE_LIMIT_BURST": "100000",
}
NO_LOGIN_LIMIT = {
    "CHAT_RATE_LIMIT_LOGIN_SLOW_AFTER": "100000",
    "CHAT_RATE_LIMIT_LOGIN_MAX_FAILURES": "100000",
}

PASSWORD = "correct horse battery"
TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_counter = itertools.count(1)
_run_tag = "%04x" % random.randrange(0x10000)


def unique (prefix="u"):
    """A nickname (or client_id) no other test of this run uses: 3..32 chars
    of the nickname alphabet."""
    name = "%s%s_%d" % (prefix, _run_tag, next (_counter))
    assert 3 <= len (name) <= 32, name
    return name


def free_port ():
    s = socket.socket (socket.AF_INET, socket.SOCK_STREAM)
    s.bind (("127.0.0.1", 0))
    port = s.getsockname () [1]
    s.close ()
    return port


# ---------------------------------------------------------------------------
#   PostgreSQL

def pg_conninfo ():
    return os.environ.get ("CHAT_TEST_PG_CONNINFO") or None


def pg_reset ():
    """An empty database for a fresh server."""
    conninfo = pg_conninfo ()
    assert conninfo, "CHAT_TEST_PG_CONNINFO is not set"
    r = subprocess.run (["psql", conninfo, "-q", "-v", "ON_ERROR_STOP=1", "-c",
                         "DROP SCHEMA public CASCADE; CREATE SCHEMA public"],
                        capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError ("psql reset failed: " + r.stderr.strip ())


def _pg_ctl_cmd (args):
    """pg_ctl args..., run as the cluster's owner (tests/with-postgres.sh
    exports CHAT_TEST_PG_CTL and CHAT_TEST_PG_RUNAS)."""
    cmd = [os.environ.get ("CHAT_TEST_PG_CTL") or "pg_ctl"] + args
    if "CHAT_TEST_PG_RUNAS" in os.environ:
        return shlex.split (os.environ ["CHAT_TEST_PG_RUNAS"]) + cmd
    if os.geteuid () == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    return cmd


def pg_control_available ():
    return bool (pg_conninfo () and os.environ.get ("CHAT_TEST_PG_DATADIR")
                 and (os.environ.get ("CHAT_TEST_PG_CTL") or shutil.which ("pg_ctl")))


class PgControl:
    """Stops and starts the test PostgreSQL under a running chatd."""

    def __init__ (self):
        self.datadir = os.environ ["CHAT_TEST_PG_DATADIR"]
        self.options = None

    def _read_opts (self):
        #   postmaster.opts holds the command line the server was started
        #   with: start it again the same way (port, socket directory...)
        path = os.path.join (self.datadir, "postmaster.opts")
        try:
            with open (path) as f:
                words = shlex.split (f.read ())
        except OSError:
            return None
        words = words [1:]
        out = []
        skip = False
        for i, w in enumerate (words):
            if skip:
                skip = False
                continue
            if w == "-D":
                skip = True
                continue
            out.append (w)
        return " ".join (shlex.quote (w) for w in out)

    def stop (self):
        if os.environ.get ("CHAT_TEST_PG_STOP"):
            subprocess.run (["sh", "-c", os.environ ["CHAT_TEST_PG_STOP"]], check=True, timeout=60)
            return
        self.options = self._read_opts ()
        r = subprocess.run (_pg_ctl_cmd (["-D", self.datadir, "-m", "fast", "-w", "stop"]),
                            capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError ("pg_ctl stop failed: %s %s" % (r.stdout, r.stderr))

    def start (self):
        if os.environ.get ("CHAT_TEST_PG_START"):
            subprocess.run (["sh", "-c", os.environ ["CHAT_TEST_PG_START"]], check=True, timeout=90)
            return
        args = ["-D", self.datadir, "-w", "-l", os.path.join (self.datadir, "e2e-restart.log")]
        if self.options:
            args += ["-o", self.options]
        r = subprocess.run (_pg_ctl_cmd (args + ["start"]),
                            capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError ("pg_ctl start failed: %s %s" % (r.stdout, r.stderr))


# ---------------------------------------------------------------------------
#   The server process

class Server:
    """One chatd: its own temp dir (SQLite file, logs); for postgres a reset
    database. start() may be called again after stop()/kill() to restart on
    the same database."""

    def __init__ (self, name, env=None, backend=None, reset=True):
        self.name = name
        self.backend = backend or CONFIG ["backend"]
        self.extra = dict (FAST_HASH)
        self.extra.update (env or {})
        self.dir = tempfile.mkdtemp (prefix="chatd-e2e-%s-" % name)
        self.db = os.path.join (self.dir, "chat.db")
        self.proc = None
        self.port = None
        self.logs = []
        if self.backend == "postgres" and reset:
            pg_reset ()

    def environ (self):
        env = {k: v for k, v in os.environ.items () if not k.startswith ("CHAT_")}
        env ["CHAT_SERVER_BIND"] = "127.0.0.1"
        env ["CHAT_SERVER_PORT"] = str (self.port)
        env ["CHAT_STORAGE_BACKEND"] = self.backend
        env ["CHAT_SQLITE_PATH"] = self.db
        if self.backend == "postgres":
            env ["CHAT_POSTGRES_CONNINFO"] = pg_conninfo ()
        env.update (self.extra)
        return env

    def start (self, timeout=30.0, port=None):
        assert self.proc is None or self.proc.poll () is not None
        self.port = port or free_port ()
        log = os.path.join (self.dir, "chatd.%d.log" % len (self.logs))
        self.logs.append (log)
        with open (log, "wb") as f:
            self.proc = subprocess.Popen ([CONFIG ["chatd"]], cwd=self.dir, env=self.environ (),
                                          stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
        deadline = time.monotonic () + timeout
        while True:
            rc = self.proc.poll ()
            if rc is not None:
                raise AssertionError ("chatd exited with %d during start-up\n%s" % (rc, self.log_tail ()))
            try:
                r = request (self.port, "GET", "/healthz", timeout=2)
                if r.status == 200:
                    return
            except OSError:
                pass
            if time.monotonic () > deadline:
                self.kill ()
                raise AssertionError ("chatd not ready (GET /healthz 200) within %.0fs\n%s"
                                      % (timeout, self.log_tail ()))
            time.sleep (0.05)   #  readiness poll, as asked: nothing to await

    def running (self):
        return self.proc is not None and self.proc.poll () is None

    def stop (self, timeout=20.0):
        """SIGTERM; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll () is None:
            self.proc.send_signal (signal.SIGTERM)
            try:
                self.proc.wait (timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill ()
                self.proc.wait ()
                return None
        return self.proc.returncode

    def kill (self):
        if self.proc is not None and self.proc.poll () is None:
            self.proc.kill ()
            self.proc.wait ()

    def log_tail (self, lines=80):
        out = []
        for path in self.logs:
            try:
                with open (path, "rb") as f:
                    text = f.read ().decode ("utf-8", "replace").splitlines ()
            except OSError:
                continue
            out.append ("---- %s (last %d lines) ----" % (path, lines))
            out.extend (text [-lines:])
        return "\n".join (out)

    def cleanup (self):
        self.kill ()
        if not CONFIG ["keep"]:
            shutil.rmtree (self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------
#   HTTP

class Response:
    def __init__ (self, status, headers, body):
        self.status = status
        self.headers = headers          #  list of (name, value)
        self.body = body
        try:
            self.json = json.loads (body) if body else None
        except ValueError:
            self.json = None

    def header (self, name):
        for k, v in self.headers:
            if k.lower () == name.lower ():
                return v
        return None

    def header_all (self, name):
        return [v for k, v in self.headers if k.lower () == name.lower ()]

    def set_cookie (self, name="session"):
        """The Set-Cookie for name, parsed: (value, {attr_lower: value})."""
        for line in self.header_all ("Set-Cookie"):
            parts = [p.strip () for p in line.split (";")]
            k, _, v = parts [0].partition ("=")
            if k.strip () != name:
                continue
            attrs = {}
            for p in parts [1:]:
                ak, _, av = p.partition ("=")
                attrs [ak.strip ().lower ()] = av.strip ()
            return v.strip (), attrs
        return None

    def __repr__ (self):
        return "<HTTP %d %r>" % (self.status, self.body [:300])


def request (port, method, path, body=None, raw=None, cookie=None, headers=None,
             source=None, timeout=15):
    conn = http.client.HTTPConnection ("127.0.0.1", port, timeout=timeout,
                                       source_address=(source, 0) if source else None)
    h = {}
    data = None
    if body is not None:
        data = json.dumps (body).encode ()
        h ["Content-Type"] = "application/json"
    if raw is not None:
        data = raw
        h ["Content-Type"] = "application/json"
    if cookie:
        h ["Cookie"] = "session=" + cookie
    h.update (headers or {})
    try:
        conn.request (method, path, body=data, headers=h)
        r = conn.getresponse ()
        resp = Response (r.status, r.getheaders (), r.read ())
    finally:
        conn.close ()
    return resp


class User:
    def __init__ (self, user_id, nickname, password, cookie=None):
        self.user_id = user_id
        self.nickname = nickname
        self.password = password
        self.cookie = cookie

    def __repr__ (self):
        return "<User %d %s>" % (self.user_id, self.nickname)


def register (port, nickname=None, password=PASSWORD):
    nickname = nickname or unique ()
    r = request (port, "POST", "/api/register", {"nickname": nickname, "password": password})
    assert r.status == 201, "register %s: %r" % (nickname, r)
    return User (r.json ["user_id"], r.json ["nickname"], password)


def metric (port, name):
    """The value of one metric of /metrics."""
    r = request (port, "GET", "/metrics")
    for line in r.body.decode ().splitlines ():
        if line.startswith (name + " "):
            return float (line.split () [1])
    raise AssertionError ("no metric %s in %r" % (name, r.body [:500]))


def login (port, nickname, password=PASSWORD, source=None):
    r = request (port, "POST", "/api/login", {"nickname": nickname, "password": password},
                 source=source)
    assert r.status == 200, "login %s: %r" % (nickname, r)
    cookie = r.set_cookie ()
    assert cookie, "login %s: no session cookie in %r" % (nickname, r.headers)
    return cookie [0]


def new_user (port, prefix="u"):
    u = register (port, unique (prefix))
    u.cookie = login (port, u.nickname, u.password)
    return u


# ---------------------------------------------------------------------------
#   WebSocket (python3-websockets 10.4, legacy asyncio client)

def same (a, b):
    """Equality that does not take True for 1."""
    if isinstance (a, bool) or isinstance (b, bool):
        return type (a) is type (b) and a == b
    return a == b


AUTO = object ()


class Client:
    """One WebSocket connection. Frames that arrive while waiting for some
    other frame are kept in buf, so tests can wait for events in any order."""

    def __init__ (self, ws, label, user=None):
        self.ws = ws
        self.label = label
        self.user = user
        self.buf = []
        self.first = None
        self.close_code = None

    @classmethod
    async def open (cls, port, cookie, origin=None, label="ws", user=None, first=True,
                    headers=None):
        h = dict (headers or {})
        if cookie:
            h ["Cookie"] = "session=" + cookie
        ws = await websockets.connect ("ws://127.0.0.1:%d/ws" % port, extra_headers=h,
                                       origin=origin, max_size=None, max_queue=None,
                                       compression=None, ping_interval=None,
                                       open_timeout=10, close_timeout=3)
        c = cls (ws, label, user)
        if first:
            f = await c.next (5)
            assert f.get ("type") == "online_users", \
                "%s: first frame is not online_users: %r" % (label, f)
            assert isinstance (f.get ("users"), list), f
            c.first = f
        return c

    async def _read (self, timeout):
        raw = await asyncio.wait_for (self.ws.recv (), timeout)
        if isinstance (raw, bytes):
            raise AssertionError ("%s: server sent a binary frame %r" % (self.label, raw [:100]))
        try:
            obj = json.loads (raw)
        except ValueError:
            raise AssertionError ("%s: server sent a text frame that is not JSON: %r"
                                  % (self.label, raw [:300]))
        if not isinstance (obj, dict) or not isinstance (obj.get ("type"), str):
            raise AssertionError ("%s: server frame is not an object with a string type: %r"
                                  % (self.label, raw [:300]))
        if CONFIG ["trace"]:
            print ("   <- %s %s" % (self.label, raw [:200]))
        return obj

    async def next (self, timeout=5.0):
        if self.buf:
            return self.buf.pop (0)
        try:
            return await self._read (timeout)
        except asyncio.TimeoutError:
            raise AssertionError ("%s: no frame within %.1fs" % (self.label, timeout))
        except ConnectionClosed as e:
            self.close_code = e.code
            raise AssertionError ("%s: connection closed (code %s) while waiting for a frame"
                                  % (self.label, e.code))

    @staticmethod
    def _matcher (type_, where, fields):
        def match (f):
            if type_ is not None and f.get ("type") != type_:
                return False
            for k, v in fields.items ():
                if k not in f or not same (f [k], v):
                    return False
            return where is None or where (f)
        return match

    async def expect (self, type_=None, timeout=5.0, where=None, **fields):
        """The first frame (buffered or new) of type_ whose fields equal the
        given ones and for which where(frame) holds."""
        match = self._matcher (type_, where, fields)
        for i, f in enumerate (self.buf):
            if match (f):
                return self.buf.pop (i)
        loop = asyncio.get_running_loop ()
        deadline = loop.time () + timeout
        desc = "%s %s" % (type_ or "frame", fields or "")
        while True:
            remaining = deadline - loop.time ()
            if remaining <= 0:
                raise AssertionError ("%s: no %s within %.1fs; other frames: %s"
                                      % (self.label, desc, timeout, self.buf [-8:]))
            try:
                f = await self._read (remaining)
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed as e:
                self.close_code = e.code
                raise AssertionError ("%s: connection closed (code %s) while waiting for %s; "
                                      "other frames: %s" % (self.label, e.code, desc, self.buf [-8:]))
            if match (f):
                return f
            self.buf.append (f)

    async def absent (self, type_=None, timeout=0.5, where=None, **fields):
        """Assert no such frame is buffered or arrives within timeout (used
        only for 'must not happen', after a barrier)."""
        match = self._matcher (type_, where, fields)
        for f in self.buf:
            assert not match (f), "%s: unexpected frame %r" % (self.label, f)
        loop = asyncio.get_running_loop ()
        deadline = loop.time () + timeout
        while True:
            remaining = deadline - loop.time ()
            if remaining <= 0:
                return
            try:
                f = await self._read (remaining)
            except asyncio.TimeoutError:
                return
            except ConnectionClosed as e:
                self.close_code = e.code
                return
            assert not match (f), "%s: unexpected frame %r" % (self.label, f)
            self.buf.append (f)

    async def send (self, obj):
        text = obj if isinstance (obj, str) else json.dumps (obj)
        if CONFIG ["trace"]:
            print ("   -> %s %s" % (self.label, text [:200]))
        await self.ws.send (text)

    async def request (self, obj, timeout=10.0):
        """Send a request carrying a fresh request_id and return the answer
        (or error frame) that echoes it."""
        obj = dict (obj)
        rid = obj.setdefault ("request_id", unique ("r"))
        await self.send (obj)
        return await self.expect (timeout=timeout, where=lambda f: same (f.get ("request_id"), rid))

    async def barrier (self, timeout=10.0):
        """A round trip through the server, so that what it sent this
        connection before is very likely read."""
        rid = unique ("b")
        await self.send ({"type": "sync", "after_id": 2 ** 62, "limit": 1, "request_id": rid})
        await self.expect ("synced", timeout=timeout, request_id=rid)

    def pm_frame (self, to, content, client_id=AUTO, **extra):
        msg = {"type": "private_message", "to_user_id": to, "content": content}
        if client_id is AUTO:
            client_id = unique ("c")
        if client_id is not None:
            msg ["client_id"] = client_id
        msg.update (extra)
        return msg

    async def wait_answer (self, to, client_id, timeout=10.0):
        def where (f):
            if f ["type"] not in ("message_delivered", "message_failed"):
                return False
            if client_id is None:
                return f.get ("client_id") is None and same (f.get ("to_user_id"), to)
            return f.get ("client_id") == client_id
        return await self.expect (timeout=timeout, where=where)

    async def pm (self, to, content, client_id=AUTO, timeout=10.0, **extra):
        """Send a private message; return its message_delivered or
        message_failed."""
        msg = self.pm_frame (to, content, client_id, **extra)
        await self.send (msg)
        return await self.wait_answer (to, msg.get ("client_id"), timeout)

    async def pm_ok (self, to, content, client_id=AUTO, **extra):
        a = await self.pm (to, content, client_id, **extra)
        assert a ["type"] == "message_delivered", "%s: message refused: %r" % (self.label, a)
        return a

    async def expect_close (self, timeout=5.0):
        """Read (and buffer) frames until the server closes; the close code
        (1006 when there was no close frame)."""
        loop = asyncio.get_running_loop ()
        deadline = loop.time () + timeout
        while True:
            remaining = deadline - loop.time ()
            if remaining <= 0:
                raise AssertionError ("%s: connection not closed within %.1fs; frames: %s"
                                      % (self.label, timeout, self.buf [-8:]))
            try:
                raw = await asyncio.wait_for (self.ws.recv (), remaining)
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed as e:
                self.close_code = e.code
                return e.code
            try:
                self.buf.append (json.loads (raw))
            except (ValueError, TypeError):
                self.buf.append ({"type": "<undecodable>", "raw": raw})

    async def close (self):
        try:
            await asyncio.wait_for (self.ws.close (), 5)
        except Exception:
            self.ws.transport.abort ()


def read_http_response (s, timeout):
    """(status, JSON body or None) of one HTTP response on socket s; a body
    without Content-Length is read until the server closes."""
    data = b""
    deadline = time.monotonic () + timeout
    while b"\r\n\r\n" not in data:
        s.settimeout (max (0.01, deadline - time.monotonic ()))
        chunk = s.recv (4096)
        if not chunk:
            raise AssertionError ("connection closed without an answer: %r" % data)
        data += chunk
    head, _, body = data.partition (b"\r\n\r\n")
    lines = head.decode ("latin-1").split ("\r\n")
    status = int (lines [0].split () [1])
    if status == 101:
        return 101, None
    length = None
    for line in lines [1:]:
        k, _, v = line.partition (":")
        if k.strip ().lower () == "content-length":
            length = int (v.strip ())
    try:
        while length is None or len (body) < length:
            s.settimeout (max (0.01, deadline - time.monotonic ()))
            chunk = s.recv (4096)
            if not chunk:
                break
            body += chunk
    except OSError:
        pass
    try:
        return status, json.loads (body [:length])
    except ValueError:
        return status, None


def ws_upgrade (port, cookie, origin=None, timeout=10.0, source=None):
    """A /ws upgrade attempt over a plain socket (python-websockets refuses
    to parse some refusals), from local address source when given:
    (status, JSON body or None). The connection is closed right after."""
    s = socket.create_connection (("127.0.0.1", port), timeout,
                                  source_address=(source, 0) if source else None)
    try:
        key = base64.b64encode (os.urandom (16)).decode ()
        req = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (port, key))
        if cookie:
            req += "Cookie: session=%s\r\n" % cookie
        if origin:
            req += "Origin: %s\r\n" % origin
        s.sendall ((req + "\r\n").encode ())
        return read_http_response (s, timeout)
    finally:
        s.close ()


async def collect_answers (client, client_ids, timeout=60.0, got=None):
    """Wait for the answer (message_delivered or message_failed) to every
    client_id: {client_id: frame}, filled in got as they come when given."""
    want = set (client_ids)
    got = {} if got is None else got
    loop = asyncio.get_running_loop ()
    deadline = loop.time () + timeout
    while want:
        f = await client.expect (timeout=max (0.1, deadline - loop.time ()),
                                 where=lambda f: f ["type"] in ("message_delivered", "message_failed")
                                 and f.get ("client_id") in want)
        want.discard (f ["client_id"])
        got [f ["client_id"]] = f
    return got


async def ws_status (port, cookie, origin=None):
    """The HTTP status of a /ws upgrade attempt (101 when it succeeded)."""
    return (await asyncio.to_thread (ws_upgrade, port, cookie, origin)) [0]


async def sync_all (client, after_id=0, limit=1000):
    """Every message of the client's user above after_id, by paging sync."""
    out = []
    while True:
        r = await client.request ({"type": "sync", "after_id": after_id, "limit": limit})
        assert r ["type"] == "synced", r
        out.extend (r ["messages"])
        if not r ["messages"]:
            assert r ["has_more"] is False, r
            return out
        after_id = r ["messages"] [-1] ["message_id"]
        if not r ["has_more"]:
            return out


async def history_all (client, with_user_id):
    out = []
    before = None
    while True:
        req = {"type": "load_history", "with_user_id": with_user_id, "limit": 100}
        if before is not None:
            req ["before_id"] = before
        r = await client.request (req)
        assert r ["type"] == "history_loaded", r
        out = r ["messages"] + out
        if not r ["has_more"] or not r ["messages"]:
            return out
        before = r ["messages"] [0] ["message_id"]


# ---------------------------------------------------------------------------
#   Raw WebSocket over a socket: for what a conforming client library will
#   not do (stay silent to pings)

class RawWS:
    def __init__ (self, port, cookie, timeout=5.0):
        self.sock = socket.create_connection (("127.0.0.1", port), timeout)
        key = base64.b64encode (os.urandom (16)).decode ()
        req = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               "Cookie: session=%s\r\n\r\n" % (port, key, cookie))
        self.sock.sendall (req.encode ())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv (4096)
            if not chunk:
                raise AssertionError ("raw ws: connection closed during handshake")
            data += chunk
        head, _, self.rest = data.partition (b"\r\n\r\n")
        status = head.split (b"\r\n") [0]
        self.status = int (status.split () [1])

    def _recv_exact (self, n, deadline):
        while len (self.rest) < n:
            remaining = deadline - time.monotonic ()
            if remaining <= 0:
                raise TimeoutError ()
            self.sock.settimeout (remaining)
            chunk = self.sock.recv (65536)
            if not chunk:
                raise EOFError ()
            self.rest += chunk
        out, self.rest = self.rest [:n], self.rest [n:]
        return out

    def read_frame (self, timeout):
        """(opcode, payload); raises EOFError when the TCP connection ends,
        TimeoutError when nothing came."""
        deadline = time.monotonic () + timeout
        b0, b1 = self._recv_exact (2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack ("!H", self._recv_exact (2, deadline)) [0]
        elif n == 127:
            n = struct.unpack ("!Q", self._recv_exact (8, deadline)) [0]
        if b1 & 0x80:
            self._recv_exact (4, deadline)
        return b0 & 0x0F, self._recv_exact (n, deadline)

    def send_frame (self, opcode, payload, fin=True):
        mask = os.urandom (4)
        head = bytes ([(0x80 if fin else 0) | opcode])
        n = len (payload)
        if n < 126:
            head += bytes ([0x80 | n])
        elif n < 65536:
            head += bytes ([0x80 | 126]) + struct.pack ("!H", n)
        else:
            head += bytes ([0x80 | 127]) + struct.pack ("!Q", n)
        masked = bytes (b ^ mask [i % 4] for i, b in enumerate (payload))
        self.sock.sendall (head + mask + masked)

    def close (self):
        try:
            self.sock.close ()
        except OSError:
            pass


# ---------------------------------------------------------------------------
#   Checks

def parse_ts (ts):
    return datetime.datetime.strptime (ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace (
        tzinfo=datetime.timezone.utc)


def check_timestamp (ts, slack_s=300):
    assert isinstance (ts, str) and TS_RE.match (ts), "timestamp not RFC 3339 UTC with ms: %r" % (ts,)
    t = parse_ts (ts)
    now = datetime.datetime.now (datetime.timezone.utc)
    assert abs ((now - t).total_seconds ()) < slack_s, "timestamp %s far from now %s" % (ts, now)


def is_id (v):
    return isinstance (v, int) and not isinstance (v, bool) and 0 < v < 2 ** 63


MESSAGE_KEYS = {"message_id", "from_user_id", "to_user_id", "nickname", "content",
                "timestamp", "is_read"}


def check_message (m, **expected):
    """A message object of the protocol, with the given field values."""
    assert isinstance (m, dict), m
    missing = MESSAGE_KEYS - set (m)
    assert not missing, "message object misses %s: %r" % (sorted (missing), m)
    assert is_id (m ["message_id"]), m
    assert is_id (m ["from_user_id"]), m
    assert is_id (m ["to_user_id"]), m
    assert isinstance (m ["nickname"], str), m
    assert isinstance (m ["content"], str), m
    assert isinstance (m ["is_read"], bool), m
    check_timestamp (m ["timestamp"])
    for k, v in expected.items ():
        assert same (m.get (k), v), "message field %s: expected %r, got %r in %r" % (k, v, m.get (k), m)
    return m

# ---------------------------------------------------------------------------
#   Test scaffolding shared by the test files

import functools  # noqa: E402
import unittest  # noqa: E402


def atest (timeout=60):
    """Run an async test method in its own event loop, with an overall
    deadline; close every WebSocket the test opened."""
    def deco (fn):
        @functools.wraps (fn)
        def wrapper (self):
            async def run ():
                self._clients = []
                try:
                    await asyncio.wait_for (fn (self), timeout)
                except asyncio.TimeoutError:
                    raise AssertionError ("test did not finish within %ds" % timeout)
                finally:
                    for c in self._clients:
                        await c.close ()
            asyncio.run (run ())
        return wrapper
    return deco


def test_failed (test):
    """In tearDown: did the test body fail?"""
    o = getattr (test, "_outcome", None)
    return o is None or not getattr (o, "success", False)


class OwnServerCase (unittest.TestCase):
    """A test with a chatd of its own (self.srv, started by the test: it
    kills and restarts it); its log is shown when the test fails."""
    server_name = "own"
    server_env = {}
    log_lines = 40

    def setUp (self):
        self.srv = Server (self.server_name, dict (self.server_env))

    def tearDown (self):
        if test_failed (self):
            print ("\n" + self.srv.log_tail (self.log_lines), file=sys.stderr)
        self.srv.cleanup ()


class ServerCase (unittest.TestCase):
    """A test class with one chatd shared by its tests; the test files
    subclass it with their own helpers."""
    server_env = {}
    server = None

    @classmethod
    def setUpClass (cls):
        cls.server = Server (cls.__name__, cls.server_env)
        cls.adjust_server (cls.server)
        try:
            cls.server.start ()
        except Exception:
            cls.server.cleanup ()
            raise
        cls.port = cls.server.port

    @classmethod
    def adjust_server (cls, server):
        """Hook: change the server's environment before it starts."""

    @classmethod
    def tearDownClass (cls):
        rc = cls.server.stop ()
        if rc != 0:
            tail = cls.server.log_tail ()
            raise AssertionError ("chatd exited with %r on SIGTERM (expected 0)\n%s" % (rc, tail))
        cls.server.cleanup ()

    def setUp (self):
        if self.server is not None and not self.server.running ():
            self.fail ("chatd is not running any more (exit %r)" % self.server.proc.returncode)

    def user (self, prefix="u"):
        return new_user (self.port, prefix)

    def http (self, method, path, body=None, **kw):
        return request (self.port, method, path, body, **kw)

    def own_origin (self):
        return "http://127.0.0.1:%d" % self.port

    def assert_json (self, r):
        ctype = r.header ("Content-Type") or ""
        self.assertTrue (ctype.lower ().startswith ("application/json"),
                         "Content-Type %r for %r" % (ctype, r))
        self.assertIsInstance (r.json, (dict, list), "body is not JSON: %r" % (r,))

    def assert_error (self, r, status, code=None, what=""):
        self.assertEqual (r.status, status, "%s: %r" % (what, r))
        self.assert_json (r)
        self.assertIsInstance (r.json.get ("error"), str, "%s: %r" % (what, r))
        self.assertIsInstance (r.json.get ("message"), str, "%s: %r" % (what, r))
        if code is not None:
            self.assertEqual (r.json ["error"], code, "%s: %r" % (what, r))



# ---------------------------------------------------------------------------
#   Runner shared by the test files


class Result (unittest.TextTestResult):
    def __init__ (self, *a, **kw):
        super ().__init__ (*a, **kw)
        self.passed = 0

    def addSuccess (self, test):
        super ().addSuccess (test)
        self.passed += 1

    def _dump_log (self, test):
        srv = getattr (type (test), "server", None)
        if isinstance (srv, Server):
            self.stream.write ("\n" + srv.log_tail (60) + "\n")
            self.stream.flush ()

    def addFailure (self, test, err):
        super ().addFailure (test, err)
        self._dump_log (test)

    def addError (self, test, err):
        super ().addError (test, err)
        self._dump_log (test)


def filtered (suite, patterns):
    out = unittest.TestSuite ()
    for t in suite:
        if isinstance (t, unittest.TestSuite):
            sub = filtered (t, patterns)
            if sub.countTestCases ():
                out.addTest (sub)
        elif not patterns or any (p.lower () in t.id ().lower () for p in patterns):
            out.addTest (t)
    return out


def run_main (module):
    """The command line of a test file: --chatd PATH --backend sqlite|postgres
    [-k PATTERN]...; prints `N passed, N failed, N skipped` at the end."""
    import argparse
    import unittest
    ap = argparse.ArgumentParser (description=(module.__doc__ or "").split ("\n") [0])
    ap.add_argument ("--chatd", required=True, help="path to the chatd binary")
    ap.add_argument ("--backend", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument ("-k", action="append", default=[], help="run tests whose id contains this (repeatable)")
    ap.add_argument ("--keep", action="store_true", help="keep temp dirs")
    ap.add_argument ("-v", "--verbose", action="store_true", help="print what the long tests saw")
    ap.add_argument ("--trace", action="store_true", help="print every WebSocket frame")
    args = ap.parse_args ()
    CONFIG ["chatd"] = os.path.abspath (args.chatd)
    CONFIG ["backend"] = args.backend
    CONFIG ["keep"] = args.keep
    CONFIG ["verbose"] = args.verbose
    CONFIG ["trace"] = args.trace
    if not os.access (CONFIG ["chatd"], os.X_OK):
        print ("chatd not found or not executable: %s" % CONFIG ["chatd"], file=sys.stderr)
        print ("0 passed, 1 failed")
        return 1
    if args.backend == "postgres" and not pg_conninfo ():
        #  77: ctest's usual SKIP_RETURN_CODE
        print ("--backend postgres needs CHAT_TEST_PG_CONNINFO (run under tests/with-postgres.sh)", file=sys.stderr)
        print ("0 passed, 0 failed, 1 skipped")
        return 77
    suite = filtered (unittest.defaultTestLoader.loadTestsFromModule (module), args.k)
    t0 = time.monotonic ()
    runner = unittest.TextTestRunner (verbosity=2, resultclass=Result, stream=sys.stdout)
    result = runner.run (suite)
    failed = len (result.failures) + len (result.errors) + len (result.unexpectedSuccesses)
    skipped = len (result.skipped)
    print ("backend %s, %.0f s" % (args.backend, time.monotonic () - t0))
    print ("%d passed, %d failed, %d skipped" % (result.passed, failed, skipped))
    return 1 if failed else 0

