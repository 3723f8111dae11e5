#!/usr/bin/python3
"""test_security.py - chatd under attack and under crashes, from the outside

Hardening tests of the real chatd binary, beside test_e2e.py and on the same
harness (tests/e2e/harness.py):

  - crash safety: many users on several connections each, chatd killed with
    SIGKILL at random moments over several rounds and restarted on the same
    database; every acknowledged message stored exactly once with its id,
    resending with the same client_id never duplicates, sync returns all;
  - abuse limits, each configured through its CHAT_<SECTION>_<KEY> variable:
    connections in total, per user, per client address; HTTP body size;
    WebSocket frame size; slow and silent clients; idle keep-alive HTTP;
    login throttling per address and per nickname; a client that never reads;
  - UTF-8: invalid text frames close with 1007 and store nothing; tricky but
    valid content is stored and returned byte for byte;
  - sessions, conversation privacy, sender identity, origins, secrets at rest,
    login timing.

Run:  /usr/bin/python3 tests/e2e/test_security.py --chatd PATH --backend sqlite|postgres [-k PATTERN]

Exit 0 when every test passed, 1 otherwise, 77 (skipped) for --backend
postgres without CHAT_TEST_PG_CONNINFO. Prints "N passed, N failed" last.
Standard library + python3-websockets 10.4 only. The crash test's random
kill points come from a seed printed with -v (set CHAT_TEST_SEED to repeat).
"""

import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import re
import socket
import statistics
import struct
import subprocess
import sys
import time

sys.path.insert (0, os.path.dirname (os.path.abspath (__file__)))

import websockets  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

import harness  # noqa: E402
from harness import (CONFIG, atest, metric, FAST_HASH, NO_LOGIN_LIMIT, NO_RATE_LIMIT, PASSWORD,  # noqa: E402
                     Client, RawWS, check_message, history_all, login,
                     pg_conninfo, register, request, sync_all, unique, ws_status,
                     ws_upgrade, read_http_response, collect_answers, OwnServerCase, run_main)


# ---------------------------------------------------------------------------
#   Scaffolding

def s_sanitized (binary):
    """Whether the chatd binary is built with AddressSanitizer."""
    try:
        out = subprocess.run (["ldd", binary], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "libasan" in out

class ServerCase (harness.ServerCase):
    """harness.ServerCase with this file's helpers (source addresses)."""

    async def connect (self, user, label=None, origin=None, source=None):
        c = await open_ws (self.port, user.cookie, label=label or user.nickname, user=user,
                           origin=origin, source=source)
        self._clients.append (c)
        return c

    def healthy (self):
        self.assertEqual (self.http ("GET", "/healthz").status, 200, "the server stopped answering")


# ---------------------------------------------------------------------------
#   Helpers the harness does not have

async def open_ws (port, cookie, label="ws", user=None, origin=None, source=None, first=True):
    """Client.open, from a chosen local address (127.0.0.x) when source is
    given: the websockets client passes local_addr to create_connection."""
    if source is None:
        return await Client.open (port, cookie, origin=origin, label=label, user=user, first=first)
    ws = await websockets.connect ("ws://127.0.0.1:%d/ws" % port,
                                   extra_headers={"Cookie": "session=" + cookie},
                                   origin=origin, max_size=None, max_queue=None,
                                   compression=None, ping_interval=None,
                                   open_timeout=10, close_timeout=3,
                                   local_addr=(source, 0))
    c = Client (ws, label, user)
    if first:
        f = await c.next (5)
        assert f.get ("type") == "online_users", "%s: first frame %r" % (label, f)
        c.first = f
    return c


def raw_socket (port, source=None, rcvbuf=None, timeout=5.0):
    s = socket.socket (socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt (socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source:
        s.bind ((source, 0))
    s.settimeout (timeout)
    s.connect (("127.0.0.1", port))
    return s


def wait_closed (s, timeout):
    """Read (and drop) what comes until the peer closes: seconds it took,
    or None if the socket is still open after timeout. What was read is
    returned too."""
    t0 = time.monotonic ()
    got = b""
    while True:
        remaining = timeout - (time.monotonic () - t0)
        if remaining <= 0:
            return None, got
        s.settimeout (remaining)
        try:
            chunk = s.recv (65536)
        except socket.timeout:
            return None, got
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic () - t0, got
        if not chunk:
            return time.monotonic () - t0, got
        got += chunk


def rss_kib (pid, field="VmRSS"):
    """A memory figure of /proc/PID/status in KiB: VmRSS (all resident),
    RssAnon (heap and stacks, without mapped files such as the database)."""
    with open ("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith (field + ":"):
                return int (line.split () [1])
    raise AssertionError ("no %s for pid %d" % (field, pid))


def db_blob (server):
    """Everything the database holds, as bytes: the SQLite files, or a
    pg_dump of the data."""
    if server.backend == "sqlite":
        blob = b""
        for suffix in ("", "-wal", "-journal", "-shm"):
            try:
                with open (server.db + suffix, "rb") as f:
                    blob += f.read ()
            except OSError:
                pass
        assert blob, "no SQLite file at %s" % server.db
        return blob
    r = subprocess.run (["pg_dump", "--data-only", pg_conninfo ()], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


# ---------------------------------------------------------------------------
#   Crash safety: many users, many connections, SIGKILL at random moments

class CrashSafetyTests (OwnServerCase):
    USERS = 20              #  users, each on CONNS connections
    CONNS = 3
    ROUNDS = 5              #  SIGKILLs
    PER_CONN = 40           #  messages each connection sends per round
    WINDOW = 8              #  unacknowledged messages per connection at most

    server_name = "crash"
    server_env = dict (NO_RATE_LIMIT, **NO_LOGIN_LIMIT)

    def test_many_users_sigkill_rounds (self):
        seed = int (os.environ.get ("CHAT_TEST_SEED") or random.randrange (1 << 30))
        rng = random.Random (seed)
        where = " (CHAT_TEST_SEED=%d)" % seed
        if CONFIG ["verbose"]:
            print ("    crash safety: seed %d" % seed)
        srv = self.srv
        srv.start ()
        users = [register (srv.port, unique ("cs")) for _ in range (self.USERS)]
        uids = [u.user_id for u in users]
        sent = {}           #  content -> (from_user_id, to_user_id, client_id); content is unique
        acked = {}          #  content -> message_id it was acknowledged with
        total = self.USERS * self.CONNS * self.PER_CONN

        async def open_all ():
            for u in users:
                u.cookie = login (srv.port, u.nickname)
            clients = await asyncio.gather (*[
                Client.open (srv.port, u.cookie, label="%s#%d" % (u.nickname, k), user=u)
                for u in users for k in range (self.CONNS)])
            return [clients [i * self.CONNS:(i + 1) * self.CONNS] for i in range (self.USERS)]

        async def check_user (u, c):
            """What sync returns for u: only u's messages, each sent once,
            every acknowledged one with its id. {content: message_id}."""
            seen = {}
            for m in await sync_all (c):
                check_message (m)
                self.assertIn (u.user_id, (m ["from_user_id"], m ["to_user_id"]),
                               "sync for %d returned another pair's message %r" % (u.user_id, m))
                info = sent.get (m ["content"])
                self.assertIsNotNone (info, "stored something never sent: %r" % m)
                self.assertEqual ((m ["from_user_id"], m ["to_user_id"]), info [:2], m)
                self.assertNotIn (m ["content"], seen, "stored twice: %r%s" % (m, where))
                seen [m ["content"]] = m ["message_id"]
            for content, (frm, to, cid) in sent.items ():
                if u.user_id in (frm, to) and content in acked:
                    self.assertEqual (seen.get (content), acked [content],
                                      "acknowledged %s from %d to %d (id %d): sync for %d has %r%s"
                                      % (cid, frm, to, acked [content], u.user_id,
                                         seen.get (content), where))
            return seen

        async def resend (u, c, stored):
            """Resend every unacknowledged message of u with its client_id:
            the first id when it was stored before the crash."""
            missing = {cid: content for content, (frm, to, cid) in sent.items ()
                       if frm == u.user_id and content not in acked}
            for cid, content in missing.items ():
                await c.send ({"type": "private_message", "to_user_id": sent [content] [1],
                               "content": content, "client_id": cid})
            got = await collect_answers (c, list (missing), timeout=60)
            for cid, f in got.items ():
                self.assertEqual (f ["type"], "message_delivered", f)
                content = missing [cid]
                if content in stored:
                    self.assertEqual (f ["message_id"], stored [content],
                                      "resent %s was stored as %d before, acknowledged now as %d%s"
                                      % (cid, stored [content], f ["message_id"], where))
                acked [content] = f ["message_id"]
            return len (missing), len ([c for c in missing.values () if c in stored])

        async def verify (conns, do_resend):
            views = await asyncio.gather (*[check_user (u, cs [0]) for u, cs in zip (users, conns)])
            stored = {}
            for v in views:
                stored.update (v)
            ids = list (stored.values ())
            self.assertEqual (len (ids), len (set (ids)), "two messages share an id" + where)
            counts = (0, 0)
            if do_resend:
                counts = await asyncio.gather (*[resend (u, cs [0], stored) for u, cs in zip (users, conns)])
                counts = tuple (map (sum, zip (*counts)))
            return views, counts

        async def pump (c, u, r, k, counter, kill_at, kill_now):
            crng = random.Random ("%d-%d-%d-%d" % (seed, r, u.user_id, k))
            others = [x for x in uids if x != u.user_id]
            outstanding = {}
            i = 0
            try:
                while True:
                    while len (outstanding) < self.WINDOW and i < self.PER_CONN:
                        cid = "r%d-k%d-%d" % (r, k, i)
                        i += 1
                        to = crng.choice (others)
                        content = "crash %d %s %s" % (u.user_id, cid, "x" * crng.randrange (200))
                        sent [content] = (u.user_id, to, cid)
                        outstanding [cid] = content
                        await c.ws.send (json.dumps ({"type": "private_message", "to_user_id": to,
                                                      "content": content, "client_id": cid}))
                    raw = await asyncio.wait_for (c.ws.recv (), 30)
                    f = json.loads (raw)
                    if f ["type"] == "message_failed":
                        raise AssertionError ("message refused: %r" % f)
                    if f ["type"] == "message_delivered" and f.get ("client_id") in outstanding:
                        acked [outstanding.pop (f ["client_id"])] = f ["message_id"]
                        counter [0] += 1
                        if counter [0] >= kill_at:
                            kill_now.set ()
            except ConnectionClosed:
                return
            except asyncio.TimeoutError:
                raise AssertionError ("%s: nothing from the server for 30 s (round %d)%s" % (c.label, r, where))

        async def round_ (r):
            conns = await open_all ()
            _, (resent, were_stored) = await verify (conns, do_resend=True)
            counter = [0]
            kill_at = rng.randint (1, int (total * 0.9))
            kill_now = asyncio.Event ()
            pumps = [asyncio.ensure_future (pump (c, u, r, k, counter, kill_at, kill_now))
                     for u, cs in zip (users, conns) for k, c in enumerate (cs)]
            waiter = asyncio.ensure_future (kill_now.wait ())
            done, _ = await asyncio.wait (pumps + [waiter], timeout=60,
                                          return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not waiter and t.exception ():
                    raise t.exception ()
            self.assertTrue (kill_now.is_set (), "round %d: %d acks within 60 s, wanted %d"
                             % (r, counter [0], kill_at))
            srv.proc.kill ()
            results = await asyncio.wait_for (asyncio.gather (*pumps, return_exceptions=True), 30)
            for x in results:
                if isinstance (x, BaseException):
                    raise x
            waiter.cancel ()
            for cs in conns:
                for c in cs:
                    c.ws.transport.abort ()
            if CONFIG ["verbose"]:
                print ("    round %d: resent %d (%d stored before), SIGKILL after %d acks, %d sent so far"
                       % (r, resent, were_stored, counter [0], len (sent)))
            srv.proc.wait (30)
            srv.start ()

        for r in range (self.ROUNDS):
            asyncio.run (round_ (r))

        async def final ():
            conns = await open_all ()
            try:
                await verify (conns, do_resend=True)
                views, _ = await verify (conns, do_resend=False)
            finally:
                for cs in conns:
                    for c in cs:
                        await c.close ()
            self.assertEqual (len (acked), len (sent), "some messages never acknowledged")
            for u, seen in zip (users, views):
                mine = {content for content, (frm, to, _) in sent.items () if u.user_id in (frm, to)}
                self.assertEqual (set (seen), mine, "sync for %d is not everything it sent and got%s"
                                  % (u.user_id, where))
            if CONFIG ["verbose"]:
                print ("    final: %d messages, all stored once" % len (sent))
        asyncio.run (final ())
        self.assertEqual (srv.stop (), 0)


# ---------------------------------------------------------------------------
#   Abuse limits

class MaxConnectionsTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_LIMITS_MAX_CONNECTIONS="4")

    @atest ()
    async def test_total_connections_limit_503 (self):
        users = [self.user ("mc") for _ in range (5)]
        for u in users [:4]:
            await self.connect (u)
        status, body = ws_upgrade (self.port, users [4].cookie)
        self.assertEqual ((status, (body or {}).get ("error")), (503, "unavailable"), body)
        status, body = ws_upgrade (self.port, users [0].cookie)
        self.assertEqual (status, 503, "a user already connected is refused too: %r" % body)
        #  HTTP still served
        self.assertEqual (self.http ("GET", "/api/me", cookie=users [4].cookie).status, 200)
        await self._clients.pop ().close ()
        deadline = time.monotonic () + 5
        while True:
            status, body = ws_upgrade (self.port, users [4].cookie)
            if status == 101:
                break
            self.assertEqual (status, 503, body)
            self.assertLess (time.monotonic (), deadline, "no room after closing a connection")
            await asyncio.sleep (0.05)     # waiting for the server to see the close
        await self.connect (users [4])


class PerUserLimitTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_LIMITS_MAX_CONNECTIONS_PER_USER="3")

    @atest ()
    async def test_connections_per_user_limit_429 (self):
        a, b = self.user ("pu"), self.user ("pu")
        #  several sessions of one user count together
        second = login (self.port, a.nickname)
        for i in range (3):
            a.cookie = login (self.port, a.nickname) if i == 2 else a.cookie
            await self.connect (a, "a%d" % i)
        for cookie in (a.cookie, second):
            status, body = ws_upgrade (self.port, cookie)
            self.assertEqual ((status, (body or {}).get ("error")), (429, "too_many_connections"), body)
        await self.connect (b)
        await self._clients.pop (0).close ()
        deadline = time.monotonic () + 5
        while ws_upgrade (self.port, a.cookie) [0] != 101:
            self.assertLess (time.monotonic (), deadline, "no room after closing a connection")
            await asyncio.sleep (0.05)     # waiting for the server to see the close


class PerAddressLimitTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_LIMITS_MAX_CONNECTIONS_PER_ADDRESS="3")

    @atest ()
    async def test_connections_per_address_limit_429 (self):
        users = [self.user ("pa") for _ in range (4)]
        for u in users [:3]:
            await self.connect (u, source="127.0.0.2")
        status, body = await asyncio.to_thread (ws_upgrade, self.port, users [3].cookie, source="127.0.0.2")
        self.assertEqual ((status, (body or {}).get ("error")), (429, "too_many_connections"), body)
        #  the same user from other addresses is fine
        for source in ("127.0.0.3", "127.0.0.1"):
            status, body = await asyncio.to_thread (ws_upgrade, self.port, users [3].cookie, source=source)
            self.assertEqual (status, 101, "from %s: %r" % (source, body))
        c = await self.connect (users [3], source="127.0.0.3")
        await c.pm_ok (users [0].user_id, "from another address")
        #  closing one makes room again on that address
        await self._clients.pop (0).close ()
        deadline = time.monotonic () + 5
        while (await asyncio.to_thread (ws_upgrade, self.port, users [3].cookie, source="127.0.0.2")) [0] != 101:
            self.assertLess (time.monotonic (), deadline, "no room after closing a connection")
            await asyncio.sleep (0.05)     # waiting for the server to see the close


class BodySizeTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_HTTP_MAX_BODY_BYTES="2048")

    def body_of (self, size):
        base = json.dumps ({"nickname": unique ("bs"), "password": ""})
        body = json.dumps ({"nickname": unique ("bs"), "password": "p" * (size - len (base))}).encode ()
        assert len (body) == size, len (body)
        return body

    def test_body_over_max_body_bytes_is_413 (self):
        for path in ("/api/register", "/api/login"):
            r = self.http ("POST", path, raw=self.body_of (2049))
            self.assert_error (r, 413, "payload_too_large", path + " 2049 bytes")
            r = self.http ("POST", path, raw=self.body_of (2048))
            self.assertNotEqual (r.status, 413, "%s: a body of exactly max_body_bytes refused" % path)
            self.assertIn (r.status, (400, 401), r)
        self.healthy ()

    def test_huge_content_length_is_413_at_once (self):
        s = raw_socket (self.port)
        try:
            s.sendall (b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 1000000000000\r\n\r\n{\"nickname\":")
            status, body = read_http_response (s, 5)
            self.assertEqual ((status, (body or {}).get ("error")), (413, "payload_too_large"), body)
        finally:
            s.close ()
        self.healthy ()

    def test_chunked_body_over_limit_is_refused (self):
        s = raw_socket (self.port)
        try:
            s.sendall (b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"{" + b" " * 998 + b"\n"
            status = None
            for i in range (8):
                try:
                    s.sendall (b"%x\r\n%s\r\n" % (len (chunk), chunk))
                except (BrokenPipeError, ConnectionResetError):
                    break
            try:
                s.sendall (b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                status, body = read_http_response (s, 5)
            except (AssertionError, ConnectionResetError):
                status = "closed"
            #  413, or a refusal of chunked bodies; never read as a request
            self.assertIn (status, (400, 411, 413, "closed"),
                           "8000-byte chunked body with max_body_bytes 2048 answered %r" % (status,))
        finally:
            s.close ()
        self.healthy ()


class RequestSmugglingTests (ServerCase):
    """A body is never read as another request: chunked bodies (which chatd
    does not take) and requests with both Content-Length and
    Transfer-Encoding (RFC 9112 6.1: such a request must be refused or its
    Content-Length ignored, and the connection closed)."""
    server_env = dict (NO_LOGIN_LIMIT)
    INNER = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"

    def answers (self, head):
        """The HTTP status lines that come back within 2 s of sending head
        with the chunked INNER request as its body."""
        s = raw_socket (self.port)
        try:
            s.sendall (head + b"%x\r\n%s\r\n0\r\n\r\n" % (len (self.INNER), self.INNER))
            _, got = wait_closed (s, 2)    # everything it answers, closed or not
        finally:
            s.close ()
        return re.findall (r"HTTP/1\.[01] \d{3}", got.decode ("latin-1"))

    def test_chunked_body_is_never_read_as_a_request (self):
        lines = self.answers (b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n")
        self.assertEqual (len (lines), 1, "a chunked POST got %r" % lines)
        self.assertFalse (lines [0].startswith ("HTTP/1.1 2"), lines)

    def test_content_length_with_transfer_encoding_is_not_smuggled (self):
        lines = self.answers (b"POST /api/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                              b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n")
        self.assertEqual (len (lines), 1, "Content-Length + Transfer-Encoding: the body was served as a "
                          "request of its own: %r" % lines)
        self.assertFalse (lines [0].startswith ("HTTP/1.1 2"), lines)


class FrameSizeTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, **NO_RATE_LIMIT)

    def raw_ws (self, cookie):
        raw = RawWS (self.port, cookie)
        self.assertEqual (raw.status, 101)
        deadline = time.monotonic () + 5
        while True:
            op, payload = raw.read_frame (max (0.01, deadline - time.monotonic ()))
            if op == 0x1 and json.loads (payload) ["type"] == "online_users":
                return raw

    def close_code (self, raw, timeout=5):
        """The code of the server's close frame (None when the TCP
        connection ended without one)."""
        deadline = time.monotonic () + timeout
        try:
            while True:
                op, payload = raw.read_frame (max (0.01, deadline - time.monotonic ()))
                if op == 0x8:
                    return struct.unpack ("!H", payload [:2]) [0] if len (payload) >= 2 else 1005
        except (EOFError, ConnectionResetError):
            return None

    def test_fragmented_message_over_64KiB_closes_1009 (self):
        a, b = self.user (), self.user ()
        raw = self.raw_ws (a.cookie)
        try:
            head = json.dumps ({"type": "private_message", "to_user_id": b.user_id,
                                "content": "frag"}) [:-2].encode ()
            raw.send_frame (0x1, head + b"x" * (30000 - len (head)), fin=False)
            raw.send_frame (0x0, b"x" * 30000, fin=False)
            raw.send_frame (0x0, b"x" * 6000, fin=False)      # 66000 bytes in all
            raw.send_frame (0x0, b'"}', fin=True)
            self.assertEqual (self.close_code (raw), 1009)
        finally:
            raw.close ()
        self.healthy ()

    def test_fragmented_message_of_64KiB_is_accepted (self):
        a, b = self.user (), self.user ()
        raw = self.raw_ws (a.cookie)
        try:
            text = json.dumps ({"type": "private_message", "to_user_id": b.user_id, "content": "",
                                "client_id": "fr"}).encode ()
            pad = 65536 - len (text) - len (b',"x":""')
            text = text [:-1] + b',"x":"' + b"y" * pad + b'"}'
            assert len (text) == 65536
            raw.send_frame (0x1, text [:40000], fin=False)
            raw.send_frame (0x0, text [40000:], fin=True)
            deadline = time.monotonic () + 5
            while True:
                op, payload = raw.read_frame (max (0.01, deadline - time.monotonic ()))
                self.assertEqual (op, 0x1, "closed: %r" % payload)
                f = json.loads (payload)
                if f ["type"] in ("error", "message_failed", "message_delivered"):
                    break
            #  content "" is invalid: the frame was read and judged, not closed
            self.assertEqual (f.get ("error"), "invalid_content", f)
        finally:
            raw.close ()

    def test_huge_declared_length_closes_1009_without_the_payload (self):
        a = self.user ()
        raw = self.raw_ws (a.cookie)
        try:
            mask = os.urandom (4)
            start = bytes (b ^ mask [i % 4] for i, b in enumerate (b'{"ty'))
            raw.sock.sendall (bytes ([0x81, 0x80 | 127]) + struct.pack ("!Q", 1 << 40) + mask + start)
            self.assertEqual (self.close_code (raw), 1009)
        finally:
            raw.close ()
        self.healthy ()


class SlowClientTests (ServerCase):
    """[http] handshake_timeout_s 2 and idle_timeout_s 3: slow headers, slow
    bodies, slow upgrades and silent sockets are cut off; an idle keep-alive
    connection is closed; an idle WebSocket is not (pings govern it)."""
    server_env = dict (NO_LOGIN_LIMIT, CHAT_HTTP_HANDSHAKE_TIMEOUT_S="2", CHAT_HTTP_IDLE_TIMEOUT_S="3")
    SLACK = 3.0

    def assert_cut (self, s, what, lo=1.0, hi=None):
        hi = hi or 3 + self.SLACK
        took, got = wait_closed (s, hi + 5)
        self.assertIsNotNone (took, "%s: still open after %.0f s" % (what, hi + 5))
        self.assertLess (took, hi, "%s: closed only after %.1f s" % (what, took))
        self.assertGreater (took, lo, "%s: closed after %.1f s, before its timeout" % (what, took))
        self.assertFalse (got.startswith (b"HTTP/1.1 2") or got.startswith (b"HTTP/1.1 101"),
                          "%s: answered %r" % (what, got [:200]))
        return took

    def test_silent_socket_is_disconnected (self):
        s = raw_socket (self.port)
        try:
            self.assert_cut (s, "a socket that never sends", lo=1.0, hi=3 + self.SLACK)
        finally:
            s.close ()
        self.healthy ()

    def test_partial_headers_are_disconnected (self):
        s = raw_socket (self.port)
        try:
            s.sendall (b"GET /api/me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            self.assert_cut (s, "request headers stalled", hi=2 + self.SLACK)
        finally:
            s.close ()
        self.healthy ()

    def test_trickled_headers_are_disconnected (self):
        """Slowloris: a header line every 0.5 s never completes."""
        s = raw_socket (self.port)
        t0 = time.monotonic ()
        closed = None
        try:
            s.sendall (b"GET /api/me HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            for i in range (40):
                time.sleep (0.5)   # the trickle itself
                try:
                    s.sendall (b"X-Trickle-%d: a\r\n" % i)
                except (BrokenPipeError, ConnectionResetError):
                    closed = time.monotonic () - t0
                    break
                s.settimeout (0.001)
                try:
                    if s.recv (4096) == b"":
                        closed = time.monotonic () - t0
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed = time.monotonic () - t0
                    break
        finally:
            s.close ()
        self.assertIsNotNone (closed, "headers trickled for 20 s were never cut off")
        self.assertLess (closed, 2 + self.SLACK, "trickled headers cut off only after %.1f s" % closed)
        self.healthy ()

    def test_partial_body_is_disconnected (self):
        s = raw_socket (self.port)
        try:
            s.sendall (b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"nickname\":\"")
            took, got = wait_closed (s, 2 + self.SLACK + 5)
            self.assertIsNotNone (took, "a body stalled after 13 of 100 bytes: still open")
            self.assertLess (took, 2 + self.SLACK, "stalled body cut off only after %.1f s" % took)
            self.assertGreater (took, 1.0, "stalled body cut off after %.1f s, before its timeout" % took)
            self.assertFalse (got.startswith (b"HTTP/1.1 2"), got [:200])
        finally:
            s.close ()
        self.healthy ()

    def test_partial_websocket_upgrade_is_disconnected (self):
        u = self.user ()
        s = raw_socket (self.port)
        try:
            s.sendall (("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                        "Cookie: session=%s\r\n" % (self.port, base64.b64encode (os.urandom (16)).decode (),
                                                   u.cookie)).encode ())
            self.assert_cut (s, "upgrade without its final CRLF", hi=2 + self.SLACK)
        finally:
            s.close ()

    def test_idle_keep_alive_connection_is_closed (self):
        s = raw_socket (self.port)
        try:
            for i in range (2):
                s.sendall (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status, body = read_http_response (s, 5)
                self.assertEqual ((status, body), (200, {"status": "ok"}), "request %d on one connection" % i)
            took, _ = wait_closed (s, 3 + self.SLACK + 5)
            self.assertIsNotNone (took, "idle keep-alive connection still open after %.0f s" % (3 + self.SLACK + 5))
            self.assertLess (took, 3 + self.SLACK, "idle keep-alive connection closed only after %.1f s" % took)
        finally:
            s.close ()

    @atest ()
    async def test_idle_websocket_is_not_cut (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        await asyncio.sleep (3 + 2 + 1.5)     # outlive both HTTP timeouts
        await wa.pm_ok (b.user_id, "an idle WebSocket lives on")


class LoginThrottleTests (ServerCase):
    """[rate_limit] login_max_failures 3 within login_window_s 3, no slowing:
    the 4th attempt is refused per nickname (from any address) and per
    address (for any nickname), and the refusal ends with the window."""
    server_env = {"CHAT_RATE_LIMIT_LOGIN_SLOW_AFTER": "1000", "CHAT_RATE_LIMIT_LOGIN_MAX_FAILURES": "3",
                  "CHAT_RATE_LIMIT_LOGIN_WINDOW_S": "3"}

    def attempt (self, nick, password, source):
        return request (self.port, "POST", "/api/login", {"nickname": nick, "password": password},
                        source=source, timeout=30)

    def test_login_throttled_per_nickname_and_per_address (self):
        x, y, z = (register (self.port, unique (p)) for p in ("ltx", "lty", "ltz"))
        #  per nickname: failures for x from three addresses
        for i, source in enumerate (("127.0.1.1", "127.0.1.2", "127.0.1.3")):
            self.assert_error (self.attempt (x.nickname, "wrong password", source), 401,
                               "invalid_credentials", "failure %d for x" % i)
        r = self.attempt (x.nickname.upper (), PASSWORD, "127.0.1.4")
        self.assert_error (r, 429, "rate_limited", "x (other case) from a fresh address, right password")
        self.assertIsNone (r.set_cookie ())
        self.assertEqual (self.attempt (z.nickname, PASSWORD, "127.0.1.4").status, 200,
                          "another nickname from that address")
        #  per address: failures for three unknown nicknames from one address
        for i in range (3):
            self.assert_error (self.attempt (unique ("nobody"), "wrong password", "127.0.2.1"), 401,
                               "invalid_credentials", "unknown nickname %d" % i)
        self.assert_error (self.attempt (y.nickname, PASSWORD, "127.0.2.1"), 429, "rate_limited",
                           "y from the address with 3 failures")
        self.assertEqual (self.attempt (y.nickname, PASSWORD, "127.0.2.2").status, 200,
                          "y from another address")
        #  the window passes: both refusals end
        time.sleep (3 + 1)    # the window itself is under test
        self.assertEqual (self.attempt (x.nickname, PASSWORD, "127.0.1.5").status, 200, "x after the window")
        self.assertEqual (self.attempt (y.nickname, PASSWORD, "127.0.2.1").status, 200,
                          "y from 127.0.2.1 after the window")


class SlowReaderTests (ServerCase):
    """A client that never reads: [limits] max_queue_bytes (default 1 MiB)
    cuts it off and the server's memory stays bounded."""
    server_env = dict (NO_LOGIN_LIMIT, **NO_RATE_LIMIT, CHAT_LIMITS_MAX_MESSAGE_BYTES="60000")
    MESSAGES = 400          #  of 60000 bytes: 24 MB for the reader that never reads
    #  SQLite's page cache (64 MiB, backends/sqlite.c) lives on chatd's heap:
    #  fill it first with messages to an offline user, so that what grows
    #  afterwards is what the slow reader costs
    WARM_UP = 1200          #  of 60000 bytes: 72 MB (sqlite only)

    async def push (self, ws, to, n, prefix, pid=None, peaks=None):
        """Send n messages of 60000 bytes, 8 unacknowledged at most; their
        ids. With pid, track the peak VmRSS and RssAnon in peaks."""
        content = "z" * 60000
        acks = {}
        cids = ["%s-%d" % (prefix, i) for i in range (n)]
        for i in range (0, n, 8):
            for cid in cids [i:i + 8]:
                await ws.send ({"type": "private_message", "to_user_id": to, "content": content,
                                "client_id": cid})
            got = await collect_answers (ws, cids [i:i + 8], timeout=30)
            for k, f in got.items ():
                self.assertEqual (f ["type"], "message_delivered", f)
                acks [k] = f ["message_id"]
            if pid:
                peaks [0] = max (peaks [0], rss_kib (pid))
                peaks [1] = max (peaks [1], rss_kib (pid, "RssAnon"))
        return acks

    @atest (timeout=150)
    async def test_client_that_never_reads_is_cut_off (self):
        sender, reader, watcher = self.user ("sr"), self.user ("sr"), self.user ("sr")
        offline = register (self.port, unique ("sr"))
        ww = await self.connect (watcher)
        ws = await self.connect (sender)
        pid = self.server.proc.pid
        if self.server.backend == "sqlite":
            await self.push (ws, offline.user_id, self.WARM_UP, "warm")
        #  the reader: a raw socket with a tiny receive buffer, never read
        #  after the handshake
        s = raw_socket (self.port, rcvbuf=4096)
        s.sendall (("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                    "Cookie: session=%s\r\n\r\n" % (self.port, base64.b64encode (os.urandom (16)).decode (),
                                                     reader.cookie)).encode ())
        try:
            await ww.expect ("user_online", user_id=reader.user_id)
            await ws.barrier ()
            rss0, anon0 = rss_kib (pid), rss_kib (pid, "RssAnon")
            peaks = [rss0, anon0]
            acks = await self.push (ws, reader.user_id, self.MESSAGES, "sr", pid, peaks)
            #  the reader's connection is gone: its user went offline
            await ww.expect ("user_offline", user_id=reader.user_id, timeout=15)
            self.assertEqual (metric (self.port, "chatd_connections"), 2.0, "sender and watcher only")
            mb = self.MESSAGES * 60000 // 1000000
            if CONFIG ["verbose"]:
                print ("    slow reader: VmRSS %d -> peak %d KiB, RssAnon %d -> peak %d KiB, %d MB sent to it"
                       % (rss0, peaks [0], anon0, peaks [1], mb))
            #  VmRSS also counts the database pages SQLite maps (mmap_size).
            #  Under AddressSanitizer freed memory sits in its quarantine (up
            #  to 256 MB), so RSS says nothing there; the disconnect above is
            #  still checked
            if not s_sanitized (CONFIG ["chatd"]):
                self.assertLess (peaks [1] - anon0, 12 * 1024, "heap (RssAnon) grew by %d KiB while %d MB "
                                 "went to a client that does not read" % (peaks [1] - anon0, mb))
                self.assertLess (peaks [0] - rss0, 40 * 1024, "VmRSS grew by %d KiB while %d MB went to a "
                                 "client that does not read" % (peaks [0] - rss0, mb))
            #  what it could not read was still stored
            reader.cookie = login (self.port, reader.nickname)
            wr = await self.connect (reader, "reader again")
            stored = await sync_all (wr, limit=8)        # 8 x 60 kB per answer: under the 1 MiB queue
            self.assertEqual (sorted (m ["message_id"] for m in stored), sorted (acks.values ()))
            #  and the socket itself was closed by the server
            took, _ = await asyncio.to_thread (wait_closed, s, 10)
            self.assertIsNotNone (took, "the server kept the TCP connection of the slow reader")
        finally:
            s.close ()


class LargeAnswerTests (ServerCase):
    """Default limits: a client that reads at once gets a sync answer larger
    than max_queue_bytes (1000 messages of up to 4096 bytes is up to 4 MB),
    and is not cut off as a slow reader."""
    server_env = dict (NO_LOGIN_LIMIT, **NO_RATE_LIMIT)

    @atest (timeout=120)
    async def test_sync_answer_over_max_queue_bytes_is_delivered (self):
        a, b = self.user ("la"), self.user ("la")
        wa = await self.connect (a)
        content = "q" * 4096                #  the default max_message_bytes
        cids = ["la-%d" % i for i in range (300)]   # 1.2 MB of content
        for i in range (0, len (cids), 50):
            for cid in cids [i:i + 50]:
                await wa.send ({"type": "private_message", "to_user_id": b.user_id, "content": content,
                                "client_id": cid})
            got = await collect_answers (wa, cids [i:i + 50])
            for f in got.values ():
                self.assertEqual (f ["type"], "message_delivered", f)
        wb = await self.connect (b)
        r = await wb.request ({"type": "sync", "after_id": 0, "limit": 1000}, timeout=30)
        self.assertEqual (r ["type"], "synced", r)
        self.assertEqual (len (r ["messages"]), 300)
        r = await wb.request ({"type": "load_history", "with_user_id": a.user_id, "limit": 100})
        self.assertEqual (len (r ["messages"]), 100)


# ---------------------------------------------------------------------------
#   UTF-8

TRICKY = [
    "emoji 😀 and flags 🇫🇷 and a family 👨‍👩‍👧‍👦 (ZWJ)",
    "4-byte only 𝄞𐍈😀🀄",
    "combining: e\u0301 vs \u00e9, a\u0308\u0304, Z\u0351\u036b\u0343\u036a",
    "RTL: \u200fשלום\u200f and \u202eevil\u202c and \u200e\u061c\u2067isolate\u2069",
    "BOM inside: a\ufeffb \ufeff",
    "\ufeffleading BOM",
    "line separators: a\u2028b\u2029c",
    "zero width: a\u200bb\u200cc\u200dd\u2060e",
    "noncharacters: \ufffe \uffff \U0010ffff \U0001fffe",
    "replacement char sent on purpose: \ufffd",
    "quotes \" backslash \\ slash / and JSON-ish \\u0041 text",
    "tab\tnewline\nreturn\r end",
    "CJK 漢字 かな 한국어, Devanagari नमस्ते",
    "surrogate-pair escapes: \U0001f600\U0001f4a9",
    "   leading and trailing spaces   ",
    "<script>alert(1)</script> &amp; ' \"",
]


class Utf8Tests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, **NO_RATE_LIMIT)

    async def expect_stored (self, viewer, expect):
        """The viewer's sync holds exactly these contents (as a list)."""
        got = [m ["content"] for m in await sync_all (viewer)]
        self.assertEqual (got, expect)

    @atest ()
    async def test_invalid_utf8_closes_1007_and_stores_nothing (self):
        a, b = self.user (), self.user ()
        wb = await self.connect (b)
        bad = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
               b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\x80", b"\xe2\x82", b"\xf0\x9f\x98"]
        for i, seq in enumerate (bad):
            wa = await self.connect (a, "bad%d" % i)
            payload = (b'{"type":"private_message","to_user_id":%d,"content":"bad %s here","client_id":"u8-%d"}'
                       % (b.user_id, seq, i))
            await wa.ws.write_frame (True, 0x1, payload)
            code = await wa.expect_close (5)
            self.assertEqual (code, 1007, "invalid UTF-8 %r: close code" % seq)
            for f in wa.buf:
                self.assertNotIn (f ["type"], ("message_delivered", "private_message"), f)
        #  truncated sequence at the very end of a frame (not inside JSON)
        wa = await self.connect (a, "bad-end")
        await wa.ws.write_frame (True, 0x1, b'{"type":"sync"}\xe2\x82')
        self.assertEqual (await wa.expect_close (5), 1007, "truncated sequence at the end")
        #  invalid byte in the second fragment of a message
        wa = await self.connect (a, "bad-frag")
        await wa.ws.write_frame (False, 0x1, b'{"type":"private_message","to_user_id":%d,"content":"ok'
                                 % b.user_id)
        await wa.ws.write_frame (True, 0x0, b' \xc3\x28 bad","client_id":"u8-frag"}')
        self.assertEqual (await wa.expect_close (5), 1007, "invalid UTF-8 in a continuation frame")
        await self.expect_stored (wb, [])
        wa = await self.connect (a, "after")
        await self.expect_stored (wa, [])
        self.healthy ()

    @atest ()
    async def test_utf8_split_across_fragments_is_valid (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        content = "split 😀 é 漢"
        text = json.dumps ({"type": "private_message", "to_user_id": b.user_id, "content": content,
                            "client_id": "split"}, ensure_ascii=False).encode ()
        cut = text.index ("😀".encode ()) + 2          # inside the 4-byte sequence
        cut2 = text.index ("漢".encode ()) + 1
        await wa.ws.write_frame (False, 0x1, text [:cut])
        await wa.ws.write_frame (False, 0x0, text [cut:cut2])
        await wa.ws.write_frame (True, 0x0, text [cut2:])
        ack = await wa.wait_answer (b.user_id, "split")
        self.assertEqual (ack ["type"], "message_delivered", ack)
        m = await wb.expect ("private_message", message_id=ack ["message_id"])
        self.assertEqual (m ["content"].encode (), content.encode ())

    @atest ()
    async def test_tricky_content_is_returned_byte_exact (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        sent = []
        for i, content in enumerate (TRICKY):
            for escaped in (False, True):
                #  escaped: every non-ASCII character as \\uXXXX, beyond the
                #  BMP as a surrogate pair
                cid = "t%d%s" % (i, "e" if escaped else "r")
                text = json.dumps ({"type": "private_message", "to_user_id": b.user_id,
                                    "content": content, "client_id": cid}, ensure_ascii=escaped)
                await wa.send (text)
                sent.append ((cid, content))
        answers = await collect_answers (wa, [c for c, _ in sent])
        for cid, content in sent:
            f = answers [cid]
            self.assertEqual (f ["type"], "message_delivered", "%r refused: %r" % (content, f))
            live = await wb.expect ("private_message", message_id=f ["message_id"])
            self.assertEqual (live ["content"].encode (), content.encode (), "delivered %s" % cid)
        for viewer, other in ((wa, b), (wb, a)):
            history = await history_all (viewer, other.user_id)
            self.assertEqual ([m ["content"].encode () for m in history],
                              [c.encode () for _, c in sent], "history")
            synced = await sync_all (viewer)
            self.assertEqual ([m ["content"].encode () for m in synced], [c.encode () for _, c in sent], "sync")
        r = self.http ("GET", "/api/conversations", cookie=b.cookie)
        self.assertEqual (r.json ["conversations"] [0] ["last_message"] ["content"], sent [-1] [1])

    @atest ()
    async def test_lone_surrogate_escapes_are_refused (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        for i, esc in enumerate (("\\ud83d", "\\ude00", "\\ude00\\ud83d", "x\\ud83dy")):
            text = ('{"type":"private_message","to_user_id":%d,"content":"lone %s","client_id":"ls%d"}'
                    % (b.user_id, esc, i))
            await wa.send (text)
            f = await wa.expect (where=lambda f: f.get ("client_id") == "ls%d" % i
                                 or (f ["type"] == "error"), timeout=5)
            self.assertNotEqual (f ["type"], "message_delivered",
                                 "a lone surrogate %s was stored (as %r?)" % (esc, f))
        wb = await self.connect (b)
        await self.expect_stored (wb, [])

    @atest ()
    async def test_content_of_exactly_max_message_bytes (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        limit = 4096            #  the default
        fits = [
            "😀" * (limit // 4),                                     # 1024 four-byte characters
            "a" * (limit - 4) + "😀",                                # the last character ends at the limit
            "e\u0301" * (limit // 3) + "a" * (limit % 3),            # combining marks
            "\u2028\ufeff" * (limit // 6) + "b" * (limit % 6),
        ]
        over = [
            "😀" * (limit // 4) + "a",
            "a" * (limit - 3) + "😀",                                # the last character crosses the limit
            "é" * (limit // 2) + "a",
        ]
        for i, content in enumerate (fits):
            self.assertEqual (len (content.encode ()), limit)
            ack = await wa.pm (b.user_id, content, "fit%d" % i)
            self.assertEqual (ack ["type"], "message_delivered", "exactly %d bytes (%d): %r" % (limit, i, ack))
        for i, content in enumerate (over):
            self.assertEqual (len (content.encode ()), limit + 1)
            f = await wa.pm (b.user_id, content, "over%d" % i)
            self.assertEqual ((f ["type"], f.get ("error")), ("message_failed", "invalid_content"),
                              "%d bytes (%d)" % (limit + 1, i))
        history = await history_all (wb, a.user_id)
        self.assertEqual ([m ["content"].encode () for m in history], [c.encode () for c in fits])
        for m in history:
            self.assertNotIn ("\ufffd", m ["content"])


# ---------------------------------------------------------------------------
#   Sessions

BAD_COOKIES = [
    ("no cookie", None),
    ("garbage", "garbage"),
    ("right length, unknown", "A" * 43),
    ("base64url of 32 random bytes", base64.urlsafe_b64encode (os.urandom (32)).decode ().rstrip ("=")),
    ("empty", ""),
    ("longer than any token", "B" * 1000),
]


class SessionTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT)

    def refused_everywhere (self, cookie, what):
        """Every endpoint that needs a session answers 401 unauthorized."""
        for method, path in (("GET", "/api/me"), ("GET", "/api/users"), ("GET", "/api/conversations"),
                             ("POST", "/api/logout")):
            r = self.http (method, path, cookie=cookie)
            self.assert_error (r, 401, "unauthorized", "%s %s with %s" % (method, path, what))
        status, body = ws_upgrade (self.port, cookie)
        self.assertEqual ((status, (body or {}).get ("error")), (401, "unauthorized"),
                          "/ws upgrade with %s: %r" % (what, body))

    def test_no_access_without_a_valid_session (self):
        u = self.user ()
        for what, cookie in BAD_COOKIES:
            self.refused_everywhere (cookie, what)
        #  the real cookie with one character changed, cut, or extended
        flipped = u.cookie [:-1] + ("A" if u.cookie [-1] != "A" else "B")
        for what, cookie in (("one character changed", flipped), ("cut short", u.cookie [:-1]),
                             ("extended", u.cookie + "A"), ("upper-cased", u.cookie.upper ()
                                                            if u.cookie.upper () != u.cookie else flipped)):
            self.refused_everywhere (cookie, what)
        self.assertEqual (self.http ("GET", "/api/me", cookie=u.cookie).status, 200, "the real cookie works")

    def test_oversized_cookie_header_is_refused (self):
        """A cookie bigger than the server's header space: refused (4xx) or
        the connection dropped; never served, and the server lives on."""
        for size in (5000, 70000):
            for method, path in (("GET", "/api/me"), ("POST", "/api/logout")):
                try:
                    status = self.http (method, path, cookie="C" * size).status
                except (http.client.HTTPException, ConnectionError) as e:
                    status = type (e).__name__
                self.assertNotIn (status, (200, 204), "%s %s with a %d-byte cookie" % (method, path, size))
                if isinstance (status, int):
                    self.assertGreaterEqual (status, 400, status)
            try:
                status = ws_upgrade (self.port, "C" * size) [0]
            except (AssertionError, ConnectionError) as e:
                status = type (e).__name__
            self.assertNotEqual (status, 101, "/ws with a %d-byte cookie" % size)
        self.healthy ()

    def test_logged_out_session_is_refused (self):
        u = register (self.port)
        cookie = login (self.port, u.nickname)
        self.assertEqual (self.http ("POST", "/api/logout", cookie=cookie).status, 204)
        self.refused_everywhere (cookie, "a logged-out session")

    @atest ()
    async def test_logout_closes_sockets_at_once (self):
        u = register (self.port)
        cookie = login (self.port, u.nickname)
        other = login (self.port, u.nickname)
        u.cookie = cookie
        w1, w2 = await self.connect (u, "s1"), await self.connect (u, "s1b")
        u.cookie = other
        w3 = await self.connect (u, "s2")
        t0 = time.monotonic ()
        r = await asyncio.to_thread (self.http, "POST", "/api/logout", cookie=cookie)
        self.assertEqual (r.status, 204)
        self.assertEqual (await w1.expect_close (3), 4001)
        self.assertEqual (await w2.expect_close (3), 4001)
        self.assertLess (time.monotonic () - t0, 2.0, "logout took more than 2 s to close the sockets")
        await w3.barrier ()
        self.refused_everywhere (cookie, "a logged-out session")
        self.assertEqual (self.http ("GET", "/api/me", cookie=other).status, 200)


class SessionExpiryTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_AUTH_SESSION_TTL_S="2")

    @atest (timeout=60)
    async def test_expired_session_is_refused_everywhere (self):
        u = register (self.port)
        t0 = time.monotonic ()
        u.cookie = login (self.port, u.nickname)
        w = await self.connect (u)
        self.assertEqual (self.http ("GET", "/api/me", cookie=u.cookie).status, 200)
        code = await w.expect_close (2 + 5)
        closed = time.monotonic () - t0
        self.assertEqual (code, 4001, "expired session's socket")
        self.assertLess (closed, 2 + 2.5, "the socket closed %.1f s after login (ttl 2 s)" % closed)
        self.assertGreater (closed, 1.5, "the socket closed %.1f s after login, before the ttl" % closed)
        self.refused_everywhere (u.cookie)

    def test_expiry_takes_effect_at_once_over_http (self):
        u = register (self.port)
        t0 = time.monotonic ()
        cookie = login (self.port, u.nickname)
        while time.monotonic () - t0 < 2.3:
            time.sleep (0.1)   # the expiry itself is under test
        self.refused_everywhere (cookie)

    def refused_everywhere (self, cookie):
        for method, path in (("GET", "/api/me"), ("GET", "/api/users"), ("GET", "/api/conversations"),
                             ("POST", "/api/logout")):
            self.assert_error (self.http (method, path, cookie=cookie), 401, "unauthorized",
                               "%s %s with an expired session" % (method, path))
        self.assertEqual (ws_upgrade (self.port, cookie) [0], 401, "/ws with an expired session")


# ---------------------------------------------------------------------------
#   Privacy and identity

class PrivacyTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, **NO_RATE_LIMIT)

    @atest ()
    async def test_nobody_reads_or_marks_another_pairs_conversation (self):
        a, b, c = self.user ("pa"), self.user ("pb"), self.user ("pc")
        wa, wb, wc = await self.connect (a), await self.connect (b), await self.connect (c)
        ab = [await wa.pm_ok (b.user_id, "a to b %d" % i) for i in range (3)]
        ba = [await wb.pm_ok (a.user_id, "b to a %d" % i) for i in range (2)]
        ca = await wc.pm_ok (a.user_id, "c to a")
        ac = await wa.pm_ok (c.user_id, "a to c")
        ab_ids = {x ["message_id"] for x in ab + ba}
        #  history: c with a sees only c<->a; c with b sees nothing
        r = await wc.request ({"type": "load_history", "with_user_id": a.user_id, "limit": 100})
        self.assertEqual (r ["type"], "history_loaded", r)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], [ca ["message_id"], ac ["message_id"]])
        for m in r ["messages"]:
            self.assertEqual ({m ["from_user_id"], m ["to_user_id"]}, {a.user_id, c.user_id}, m)
        r = await wc.request ({"type": "load_history", "with_user_id": b.user_id, "limit": 100})
        self.assertEqual (r.get ("messages", []), [], r)
        for before in (None, max (ab_ids) + 1, 2 ** 62):
            req = {"type": "load_history", "with_user_id": a.user_id, "limit": 100}
            if before:
                req ["before_id"] = before
            r = await wc.request (req)
            self.assertFalse (ab_ids & {m ["message_id"] for m in r ["messages"]}, "c read a<->b")
        #  sync never returns others' messages
        synced = await sync_all (wc)
        self.assertEqual (sorted (m ["message_id"] for m in synced), sorted ([ca ["message_id"], ac ["message_id"]]))
        #  conversations: c has a only
        r = self.http ("GET", "/api/conversations", cookie=c.cookie)
        self.assertEqual ([x ["user_id"] for x in r.json ["conversations"]], [a.user_id])
        #  mark_read by c: every way of naming a<->b leaves its read state
        for with_id in (a.user_id, b.user_id):
            await wc.send ({"type": "mark_read", "with_user_id": with_id, "up_to_id": 2 ** 62})
        await wc.barrier ()
        await wa.expect ("messages_read", by_user_id=c.user_id)      # c read a's message to c
        await wb.barrier ()
        #  a receipt only for messages really read: b hears nothing (c has
        #  no messages from b), and never a receipt by a
        await wb.absent ("messages_read")
        await wa.absent ("messages_read", by_user_id=b.user_id)
        for viewer, other, unread in ((wb, a, 3), (wa, b, 2)):
            history = await history_all (viewer, other.user_id)
            flags = [m ["is_read"] for m in history if m ["to_user_id"] == viewer.user.user_id]
            self.assertEqual (flags, [False] * unread, "read state of a<->b changed by c")
        r = self.http ("GET", "/api/conversations", cookie=b.cookie)
        self.assertEqual ([x ["unread"] for x in r.json ["conversations"] if x ["user_id"] == a.user_id], [3])

    @atest ()
    async def test_nobody_sends_as_someone_else (self):
        a, b, c = self.user ("sa"), self.user ("sb"), self.user ("sc")
        wb, wc = await self.connect (b), await self.connect (c)
        forged = {"from_user_id": a.user_id, "nickname": a.nickname, "message_id": 1,
                  "timestamp": "2000-01-01T00:00:00.000Z", "is_read": True, "user_id": a.user_id}
        ack = await wc.pm_ok (b.user_id, "who sent this?", "forge-1", **forged)
        live = await wb.expect ("private_message", message_id=ack ["message_id"])
        check_message (live, from_user_id=c.user_id, nickname=c.nickname, to_user_id=b.user_id, is_read=False)
        self.assertNotEqual (live ["timestamp"], forged ["timestamp"])
        self.assertNotEqual (ack ["message_id"], 1)
        for viewer, other in ((wb, c), (wc, b)):
            [m] = await history_all (viewer, other.user_id)
            check_message (m, from_user_id=c.user_id, nickname=c.nickname, content="who sent this?")
        #  a holds no conversation with b
        wa = await self.connect (a)
        self.assertEqual (await history_all (wa, b.user_id), [])
        self.assertEqual (await sync_all (wa), [])


class OriginTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_HTTP_ALLOWED_ORIGINS="https://chat.example.com http://allowed.example:8080")

    def refused_origins (self):
        own = self.own_origin ()
        return ["http://evil.example", "null", "https://chat.example.com.evil.example",
                "https://chat.example.comx", "https://chat.example.co", "http://chat.example.com",
                "https://chat.example.com:8443", "http://allowed.example", "http://allowed.example:80801",
                "http://allowed.example:808", own + "0", own + ".evil.example", own + "@evil.example",
                "http://127.0.0.1", "https://127.0.0.1:%d" % self.port, "http://localhost:%d" % self.port,
                "https://chat.example.com http://evil.example", "*", ""]

    @atest ()
    async def test_cross_origin_upgrades_refused (self):
        u = self.user ()
        for origin in self.refused_origins ():
            if origin == "":
                continue
            status, body = ws_upgrade (self.port, u.cookie, origin=origin)
            self.assertEqual ((status, (body or {}).get ("error")), (403, "forbidden"),
                              "upgrade from Origin %r" % origin)
        for origin in (self.own_origin (), "https://chat.example.com", "http://allowed.example:8080", None):
            self.assertEqual (await ws_status (self.port, u.cookie, origin=origin), 101, origin)
        c = await self.connect (u, origin="https://chat.example.com")
        self.assertEqual (c.first ["type"], "online_users")

    def test_cross_origin_posts_refused (self):
        u = register (self.port)
        cookie = login (self.port, u.nickname)
        creds = {"nickname": u.nickname, "password": PASSWORD}
        for origin in self.refused_origins ():
            if origin == "":
                continue
            r = self.http ("POST", "/api/register", {"nickname": unique ("or"), "password": PASSWORD},
                           headers={"Origin": origin})
            self.assert_error (r, 403, None, "register from %r" % origin)
            r = self.http ("POST", "/api/login", creds, headers={"Origin": origin})
            self.assert_error (r, 403, None, "login from %r" % origin)
            self.assertIsNone (r.set_cookie (), "a refused login set a cookie")
            r = self.http ("POST", "/api/logout", cookie=cookie, headers={"Origin": origin})
            self.assert_error (r, 403, None, "logout from %r" % origin)
        self.assertEqual (self.http ("GET", "/api/me", cookie=cookie).status, 200, "a refused logout revoked")
        for origin in (self.own_origin (), "https://chat.example.com", "http://allowed.example:8080"):
            r = self.http ("POST", "/api/login", creds, headers={"Origin": origin})
            self.assertEqual (r.status, 200, "login from %s: %r" % (origin, r))
        r = self.http ("POST", "/api/logout", cookie=cookie, headers={"Origin": "https://chat.example.com"})
        self.assertEqual (r.status, 204, r)


class SecretsAtRestTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT)

    def test_passwords_only_as_argon2id_and_tokens_only_as_hashes (self):
        users = []
        for i in range (3):
            password = "pw-%s-secret" % os.urandom (8).hex ()
            u = register (self.port, unique ("sec"), password)
            u.cookie = login (self.port, u.nickname, password)
            users.append (u)
        logged_out = login (self.port, users [0].nickname, users [0].password)
        self.assertEqual (self.http ("POST", "/api/logout", cookie=logged_out).status, 204)
        blob = db_blob (self.server)
        self.assertGreaterEqual (blob.count (b"$argon2id$v=19$"), len (users),
                                 "fewer Argon2id hashes than users in the database")
        self.assertNotIn (b"$argon2i$", blob, "an Argon2i (not id) hash")
        for u in users:
            self.assertIn (u.nickname.encode (), blob, "the dump does not even hold the user")
            self.assertNotIn (u.password.encode (), blob, "a password is stored in clear")
            self.assertNotIn (base64.b64encode (u.password.encode ()), blob)
            self.assertNotIn (u.cookie.encode (), blob, "a session token is stored in clear")
            raw = base64.urlsafe_b64decode (u.cookie + "=" * (-len (u.cookie) % 4))
            self.assertGreaterEqual (len (raw), 16, "session token under 128 bits")
            self.assertNotIn (raw, blob, "a session token's bytes are stored")
            self.assertNotIn (raw.hex ().encode (), blob, "a session token is stored in hex")
            digest = hashlib.blake2b (u.cookie.encode (), digest_size=32).hexdigest ().encode ()
            self.assertIn (digest, blob, "the session's BLAKE2b-256 hash is not what is stored")
        gone = hashlib.blake2b (logged_out.encode (), digest_size=32).hexdigest ().encode ()
        if self.server.backend == "postgres":
            self.assertNotIn (gone, blob, "a logged-out session is still stored")


class LoginTimingTests (ServerCase):
    """Wrong nickname and wrong password with the DEFAULT Argon2id cost."""
    server_env = dict (NO_LOGIN_LIMIT)

    @classmethod
    def adjust_server (cls, server):
        for k in FAST_HASH:
            server.extra.pop (k, None)

    def test_wrong_nickname_and_wrong_password_medians_within_2x (self):
        u = register (self.port)

        def timed (body):
            t = time.monotonic ()
            r = self.http ("POST", "/api/login", body, timeout=60)
            self.assert_error (r, 401, "invalid_credentials", repr (body ["nickname"]))
            return time.monotonic () - t
        t_nick, t_pw = [], []
        for i in range (7):
            t_nick.append (timed ({"nickname": unique ("ghost"), "password": PASSWORD}))
            t_pw.append (timed ({"nickname": u.nickname, "password": "wrong password %d" % i}))
        m_nick, m_pw = statistics.median (t_nick), statistics.median (t_pw)
        if CONFIG ["verbose"]:
            print ("    login timing: unknown nickname %.1f ms, wrong password %.1f ms"
                   % (m_nick * 1000, m_pw * 1000))
        self.assertGreater (m_pw, 0.02, "wrong password answered in %.1f ms: is the default cost in force?"
                            % (m_pw * 1000))
        self.assertLess (max (m_nick, m_pw) / min (m_nick, m_pw), 2.0,
                         "medians %.1f ms (unknown nickname) and %.1f ms (wrong password)"
                         % (m_nick * 1000, m_pw * 1000))


# ---------------------------------------------------------------------------

if __name__ == "__main__":
    sys.exit (run_main (sys.modules [__name__]))
