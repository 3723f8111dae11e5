#!/usr/bin/python3
"""test_e2e.py - chatd from the outside: the client contract, end to end

Proves that the real chatd binary follows /work/shared/spec/protocol.md
(and the choices the project made where it is silent): HTTP API, cookies,
origins, login throttling, WebSocket presence, messages, history, sync,
read state, typing, rate limits, bad input, closing codes, health,
metrics, configuration, shutdown, crash durability, and (postgres only)
a database outage under a running server.

Run:  /usr/bin/python3 tests/e2e/test_e2e.py --chatd PATH --backend sqlite|postgres [-k PATTERN]

Each test class starts its own chatd (free port on 127.0.0.1, temp dir,
configuration by CHAT_* variables) and stops it with SIGTERM, asserting
exit code 0. Tests in one class share the server and use unique
nicknames. Standard library + python3-websockets 10.4 only.
"""

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert (0, os.path.dirname (os.path.abspath (__file__)))

import websockets  # noqa: E402  (Debian's python3-websockets)

import harness  # noqa: E402
from harness import (CONFIG, atest, metric, ws_upgrade, FAST_HASH, NO_LOGIN_LIMIT, NO_RATE_LIMIT, PASSWORD,  # noqa: E402
                     Client, PgControl, RawWS, Server, check_message, check_timestamp,
                     free_port, history_all, is_id, login, new_user, pg_conninfo,
                     pg_control_available, register, request, same, sync_all, unique,
                     ws_status, collect_answers, test_failed, OwnServerCase, run_main)


# ---------------------------------------------------------------------------
#   Scaffolding

class ServerCase (harness.ServerCase):
    """harness.ServerCase with this file's WebSocket helpers."""

    async def connect (self, user, label=None, origin=None, port=None):
        c = await Client.open (port or self.port, user.cookie, origin=origin,
                               label=label or user.nickname, user=user)
        self._clients.append (c)
        return c

    async def ws_error (self, c, code, frame, request_id=None):
        """Send frame; expect {"type":"error","error":code} (with request_id
        echoed when given)."""
        await c.send (frame)
        if request_id is not None:
            f = await c.expect ("error", request_id=request_id)
        else:
            f = await c.expect ("error")
        what = frame if isinstance (frame, str) else json.dumps (frame)
        if isinstance (code, tuple):
            self.assertIn (f.get ("error"), code, "frame %s answered %r" % (what [:200], f))
        else:
            self.assertEqual (f.get ("error"), code, "frame %s answered %r" % (what [:200], f))
        self.assertIsInstance (f.get ("message"), str, f)
        return f

    async def still_usable (self, c, to):
        """The connection still carries a valid private message."""
        return await c.pm_ok (to.user_id, "still usable " + unique ("s"))


def conv_by_user (conversations, user_id):
    for c in conversations:
        if c.get ("user_id") == user_id:
            return c
    return None


async def send_many (client, to, n, prefix):
    """Pipeline n messages (content == client_id); return the acks in order."""
    cids = ["%s-%d" % (prefix, i) for i in range (n)]
    for cid in cids:
        await client.send ({"type": "private_message", "to_user_id": to, "content": cid,
                            "client_id": cid})
    got = await collect_answers (client, cids)
    acks = [got [c] for c in cids]
    for a in acks:
        assert a ["type"] == "message_delivered", a
    return acks


# ---------------------------------------------------------------------------
#   HTTP API

class ApiTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_HTTP_ALLOWED_ORIGINS=
                       "http://allowed.example https://second.example:8443")

    def test_healthz (self):
        r = self.http ("GET", "/healthz")
        self.assertEqual (r.status, 200, r)
        self.assert_json (r)
        self.assertEqual (r.json.get ("status"), "ok", r)

    def test_metrics (self):
        self.http ("GET", "/healthz")
        r = self.http ("GET", "/metrics")
        self.assertEqual (r.status, 200, r)
        self.assertTrue ((r.header ("Content-Type") or "").startswith ("text/plain"), r.headers)
        text = r.body.decode ("utf-8")
        line = re.compile (r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? +(-?[0-9.eE+-]+|NaN|[+-]Inf)( +-?\d+)?$")
        samples = [l for l in text.splitlines () if l and not l.startswith ("#")]
        self.assertTrue (samples, "no metric lines: %r" % text [:500])
        for l in samples:
            self.assertRegex (l, line)

    def test_unknown_path_is_404 (self):
        u = self.user ()
        for path in ("/nope", "/api/nope", "/api", "/api/me/x"):
            self.assert_error (self.http ("GET", path), 404, "not_found", path)
            self.assert_error (self.http ("GET", path, cookie=u.cookie), 404, "not_found", path)
        self.assert_error (self.http ("POST", "/api/nope", {}), 404, "not_found", "POST /api/nope")

    def test_wrong_method_is_405 (self):
        u = self.user ()
        for method, path in (("GET", "/api/register"), ("GET", "/api/login"), ("GET", "/api/logout"),
                             ("POST", "/api/me"), ("POST", "/api/users"), ("POST", "/api/conversations"),
                             ("POST", "/healthz"), ("POST", "/metrics"), ("PUT", "/api/register"),
                             ("DELETE", "/api/me")):
            body = {} if method in ("POST", "PUT") else None
            r = self.http (method, path, body, cookie=u.cookie)
            self.assert_error (r, 405, "method_not_allowed", "%s %s" % (method, path))
        #  the session survived all that
        self.assertEqual (self.http ("GET", "/api/me", cookie=u.cookie).status, 200)

    def test_register (self):
        n1, n2 = unique ("reg"), unique ("reg")
        r = self.http ("POST", "/api/register", {"nickname": n1, "password": PASSWORD})
        self.assertEqual (r.status, 201, r)
        self.assert_json (r)
        self.assertTrue (is_id (r.json.get ("user_id")), r)
        self.assertEqual (r.json.get ("nickname"), n1)
        r2 = self.http ("POST", "/api/register", {"nickname": n2, "password": PASSWORD})
        self.assertEqual (r2.status, 201, r2)
        self.assertGreater (r2.json ["user_id"], r.json ["user_id"], "user ids grow")
        #  registering logs nobody in
        self.assertIsNone (r.set_cookie (), r.headers)

    def test_register_bad_json (self):
        for raw in (b"not json", b"[1, 2]", b'"nick"', b"42", b"null", b"", b'{"nickname": "abc"',
                    b"\xff\xfe{}"):
            r = self.http ("POST", "/api/register", raw=raw)
            self.assert_error (r, 400, "bad_json", raw)

    def test_register_invalid_nickname (self):
        for nick in (None, 123, ["abcd"], {"a": 1}, True, "", "ab", "a" * 33, "has space",
                     "bad/char", "ünïcode", "tab\tname", "abc!", "emoji😀x", "semi;colon"):
            body = {"password": PASSWORD}
            if nick is not None:
                body ["nickname"] = nick
            r = self.http ("POST", "/api/register", body)
            self.assert_error (r, 400, "invalid_nickname", repr (nick))
        r = self.http ("POST", "/api/register", {"nickname": None, "password": PASSWORD})
        self.assert_error (r, 400, "invalid_nickname", "null nickname")

    def test_register_invalid_password (self):
        nick = unique ("pw")
        for pw in (None, 12345678, ["12345678"], False, "", "short12", "x" * 257, "ééé" + "a"):
            body = {"nickname": nick}
            if pw is not None:
                body ["password"] = pw
            r = self.http ("POST", "/api/register", body)
            self.assert_error (r, 400, "invalid_password", repr (pw))
        #  nothing was created: the nickname is still free
        r = self.http ("POST", "/api/register", {"nickname": nick, "password": PASSWORD})
        self.assertEqual (r.status, 201, r)

    def test_register_boundaries (self):
        tag = unique ("") [1:]
        short = ("Q" + tag) [:3]
        for nick in (short, ("A.b-c_9" + tag).ljust (32, "z")):
            self.assertEqual (len (nick) in (3, 32), True)
            r = self.http ("POST", "/api/register", {"nickname": nick, "password": PASSWORD})
            self.assertEqual (r.status, 201, "%s: %r" % (nick, r))
            self.assertEqual (r.json ["nickname"], nick)
        for pw in ("12345678", "p" * 256, "éééé"):
            nick = unique ("pwb")
            r = self.http ("POST", "/api/register", {"nickname": nick, "password": pw})
            self.assertEqual (r.status, 201, "password of %d bytes: %r" % (len (pw.encode ()), r))
            login (self.port, nick, pw)

    def test_register_nickname_taken_case_insensitive (self):
        nick = unique ("CaSe")
        self.assertEqual (self.http ("POST", "/api/register", {"nickname": nick, "password": PASSWORD}).status, 201)
        for other in (nick, nick.lower (), nick.upper (), nick.swapcase ()):
            r = self.http ("POST", "/api/register", {"nickname": other, "password": "another password"})
            self.assert_error (r, 409, "nickname_taken", other)

    def test_login_and_cookie (self):
        u = register (self.port)
        r = self.http ("POST", "/api/login", {"nickname": u.nickname, "password": PASSWORD})
        self.assertEqual (r.status, 200, r)
        self.assert_json (r)
        self.assertEqual (r.json.get ("user_id"), u.user_id)
        self.assertEqual (r.json.get ("nickname"), u.nickname)
        cookie = r.set_cookie ("session")
        self.assertIsNotNone (cookie, "no Set-Cookie session=...: %r" % (r.headers,))
        value, attrs = cookie
        self.assertRegex (value, r"^[A-Za-z0-9_-]{22,}={0,2}$", "cookie value is not >= 128 bits base64url")
        self.assertIn ("httponly", attrs, attrs)
        self.assertEqual (attrs.get ("samesite", "").lower (), "lax", attrs)
        self.assertEqual (attrs.get ("path"), "/", attrs)
        self.assertRegex (attrs.get ("max-age", ""), r"^[1-9][0-9]*$", attrs)
        me = self.http ("GET", "/api/me", cookie=value)
        self.assertEqual (me.status, 200, me)
        self.assert_json (me)
        self.assertEqual (me.json.get ("user_id"), u.user_id)
        self.assertEqual (me.json.get ("nickname"), u.nickname)

    def test_session_tokens_are_distinct (self):
        u = register (self.port)
        cookies = {login (self.port, u.nickname) for _ in range (3)}
        self.assertEqual (len (cookies), 3, "three logins gave the same token")
        for c in cookies:
            self.assertEqual (self.http ("GET", "/api/me", cookie=c).json ["user_id"], u.user_id)

    def test_login_case_insensitive (self):
        u = register (self.port, unique ("MiXeD"))
        for spelling in (u.nickname.lower (), u.nickname.upper (), u.nickname.swapcase ()):
            r = self.http ("POST", "/api/login", {"nickname": spelling, "password": PASSWORD})
            self.assertEqual (r.status, 200, "%s: %r" % (spelling, r))
            self.assertEqual (r.json ["user_id"], u.user_id)
            self.assertEqual (r.json ["nickname"], u.nickname, "the registered spelling is kept")

    def test_login_wrong_credentials_same_401 (self):
        u = register (self.port)
        other = register (self.port, password="other user's password")
        answers = []
        for body in ({"nickname": unique ("ghost"), "password": PASSWORD},
                     {"nickname": u.nickname, "password": "wrong password"},
                     {"nickname": u.nickname, "password": other.password},
                     {"nickname": u.nickname.upper (), "password": PASSWORD.upper ()}):
            r = self.http ("POST", "/api/login", body)
            self.assert_error (r, 401, "invalid_credentials", body)
            self.assertIsNone (r.set_cookie (), "a failed login set a cookie: %r" % (r.headers,))
            answers.append (r.json)
        for a in answers [1:]:
            self.assertEqual (a, answers [0], "wrong nickname and wrong password answer differently")

    def test_login_bad_body (self):
        u = register (self.port)
        for raw in (b"nope", b"[]", b"", b'"x"'):
            self.assert_error (self.http ("POST", "/api/login", raw=raw), 400, "bad_json", raw)
        wrong = []
        for body, code in (({"password": PASSWORD}, "invalid_nickname"),
                           ({"nickname": 5, "password": PASSWORD}, "invalid_nickname"),
                           ({"nickname": None, "password": PASSWORD}, "invalid_nickname"),
                           ({"nickname": ["x"], "password": PASSWORD}, "invalid_nickname"),
                           ({"nickname": u.nickname}, "invalid_password"),
                           ({"nickname": u.nickname, "password": 12345678}, "invalid_password"),
                           ({"nickname": u.nickname, "password": None}, "invalid_password")):
            r = self.http ("POST", "/api/login", body)
            if r.status != 400 or (r.json or {}).get ("error") != code:
                wrong.append ("%s -> expected 400 %s, got %r" % (json.dumps (body), code, r))
        if wrong:
            self.fail ("\n".join (wrong))
        #  a string of the wrong shape is just a failed login
        r = self.http ("POST", "/api/login", {"nickname": "a b", "password": "x"})
        self.assert_error (r, 401, "invalid_credentials", "malformed strings")

    def test_auth_required (self):
        forged = "A" * 43
        for path in ("/api/me", "/api/users", "/api/conversations"):
            for cookie in (None, "garbage", forged):
                self.assert_error (self.http ("GET", path, cookie=cookie), 401, "unauthorized",
                                   "%s cookie=%r" % (path, cookie))
            r = self.http ("GET", path, headers={"Cookie": "other=" + forged})
            self.assert_error (r, 401, "unauthorized", path + " with another cookie name")
        self.assert_error (self.http ("POST", "/api/logout"), 401, "unauthorized", "logout without cookie")
        self.assert_error (self.http ("POST", "/api/logout", cookie=forged), 401, "unauthorized", "logout forged")

    def test_users_list (self):
        a, b = self.user ("lst"), register (self.port, unique ("lst"))
        r = self.http ("GET", "/api/users", cookie=a.cookie)
        self.assertEqual (r.status, 200, r)
        self.assert_json (r)
        users = r.json.get ("users")
        self.assertIsInstance (users, list, r)
        by_id = {}
        for e in users:
            self.assertEqual (set (e), {"user_id", "nickname", "online"}, e)
            self.assertTrue (is_id (e ["user_id"]), e)
            self.assertIsInstance (e ["online"], bool, e)
            by_id [e ["user_id"]] = e
        self.assertEqual (by_id [a.user_id] ["nickname"], a.nickname)
        self.assertEqual (by_id [b.user_id] ["nickname"], b.nickname)
        self.assertIs (by_id [b.user_id] ["online"], False)
        names = [e ["nickname"] for e in users]
        self.assertTrue (names == sorted (names) or names == sorted (names, key=str.lower),
                         "users not ordered by nickname: %r" % names)

    def test_conversations_empty (self):
        u = self.user ()
        r = self.http ("GET", "/api/conversations", cookie=u.cookie)
        self.assertEqual (r.status, 200, r)
        self.assert_json (r)
        self.assertEqual (r.json.get ("conversations"), [], r)

    def test_logout (self):
        u = register (self.port)
        c1, c2 = login (self.port, u.nickname), login (self.port, u.nickname)
        r = self.http ("POST", "/api/logout", cookie=c1)
        self.assertEqual (r.status, 204, r)
        self.assertEqual (r.body, b"", r)
        cleared = r.set_cookie ("session")
        self.assertIsNotNone (cleared, "logout did not clear the cookie: %r" % (r.headers,))
        value, attrs = cleared
        self.assertTrue (attrs.get ("max-age") == "0" or "1970" in attrs.get ("expires", ""),
                         "logout cookie does not expire: %r" % (attrs,))
        self.assertNotEqual (value, c1)
        self.assert_error (self.http ("GET", "/api/me", cookie=c1), 401, "unauthorized", "after logout")
        self.assert_error (self.http ("POST", "/api/logout", cookie=c1), 401, "unauthorized", "logout twice")
        self.assertEqual (self.http ("GET", "/api/me", cookie=c2).status, 200, "the other session lives")

    @atest ()
    async def test_logout_closes_that_sessions_websockets_4001 (self):
        u = register (self.port)
        watcher = self.user ("w")
        s1, s2 = login (self.port, u.nickname), login (self.port, u.nickname)
        wv = await self.connect (watcher)
        u.cookie = s1
        w1a = await self.connect (u, "s1a")
        w1b = await self.connect (u, "s1b")
        await wv.expect ("user_online", user_id=u.user_id)
        u.cookie = s2
        w2 = await self.connect (u, "s2")
        self.assertEqual (self.http ("POST", "/api/logout", cookie=s1).status, 204)
        self.assertEqual (await w1a.expect_close (), 4001)
        self.assertEqual (await w1b.expect_close (), 4001)
        self.assertEqual (await ws_status (self.port, s1), 401, "revoked session may not upgrade")
        await w2.pm_ok (watcher.user_id, "session 2 still works")
        await wv.expect ("private_message", from_user_id=u.user_id)
        await wv.barrier ()
        await wv.absent ("user_offline", user_id=u.user_id)
        self.assertEqual (await ws_status (self.port, s2), 101)

    def test_post_origin (self):
        foreign = "http://evil.example"
        nick = unique ("orig")
        body = {"nickname": nick, "password": PASSWORD}
        for origin in (foreign, "http://allowed.example.evil.example", "http://127.0.0.1:1",
                       "https://allowed.example", "null"):
            r = self.http ("POST", "/api/register", body, headers={"Origin": origin})
            self.assert_error (r, 403, None, "register from Origin %s" % origin)
        self.assertEqual (self.http ("POST", "/api/register", body).status, 201, "refused register stored nothing")
        r = self.http ("POST", "/api/login", body, headers={"Origin": foreign})
        self.assert_error (r, 403, None, "login from a foreign origin")
        self.assertIsNone (r.set_cookie ())
        for origin in (self.own_origin (), "http://allowed.example", "https://second.example:8443"):
            r = self.http ("POST", "/api/login", body, headers={"Origin": origin})
            self.assertEqual (r.status, 200, "login from %s: %r" % (origin, r))
        cookie = login (self.port, nick)
        r = self.http ("POST", "/api/logout", cookie=cookie, headers={"Origin": foreign})
        self.assert_error (r, 403, None, "logout from a foreign origin")
        self.assertEqual (self.http ("GET", "/api/me", cookie=cookie).status, 200, "refused logout revoked")
        r = self.http ("POST", "/api/logout", cookie=cookie, headers={"Origin": self.own_origin ()})
        self.assertEqual (r.status, 204, r)
        r2 = self.http ("POST", "/api/register", {"nickname": unique ("orig"), "password": PASSWORD},
                        headers={"Origin": "http://allowed.example"})
        self.assertEqual (r2.status, 201, r2)

    @atest ()
    async def test_ws_upgrade_auth_and_origin (self):
        u = self.user ()
        self.assertEqual (await ws_status (self.port, None), 401, "no cookie")
        self.assertEqual (await ws_status (self.port, "garbage"), 401, "bad cookie")
        self.assertEqual (await ws_status (self.port, "B" * 43), 401, "unknown cookie")
        for origin in ("http://evil.example", "http://127.0.0.1:%d" % (self.port + 1 if self.port < 65535 else 1),
                       "http://localhost:%d" % self.port, "https://127.0.0.1:%d" % self.port):
            self.assertEqual (await ws_status (self.port, u.cookie, origin=origin), 403, origin)
        for origin in (self.own_origin (), "http://allowed.example", "https://second.example:8443", None):
            self.assertEqual (await ws_status (self.port, u.cookie, origin=origin), 101, origin)
        #  refusals carry a JSON error body (chatd: unauthorized / forbidden)
        status, body = ws_upgrade (self.port, None)
        self.assertEqual ((status, (body or {}).get ("error")), (401, "unauthorized"), body)
        status, body = ws_upgrade (self.port, u.cookie, origin="http://evil.example")
        self.assertEqual ((status, (body or {}).get ("error")), (403, "forbidden"), body)
        #  the library's own client works too
        c = await self.connect (u, origin=self.own_origin ())
        self.assertEqual (c.first ["type"], "online_users")

    def raw_upgrade (self, request):
        """Send a raw upgrade request; the answer's status line and body."""
        with socket.create_connection (("127.0.0.1", self.port), 10) as s:
            s.sendall (request.encode ())
            data = b""
            while True:
                chunk = s.recv (4096)
                if not chunk or b"\r\n\r\n" in data + chunk and not data.startswith (b"HTTP/1.1 4"):
                    data += chunk
                    break
                data += chunk
            return data.decode ("latin-1")

    def test_ws_upgrade_details (self):
        u = self.user ()
        key = base64.b64encode (os.urandom (16)).decode ()
        base = ("Host: 127.0.0.1:%d\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                "Sec-WebSocket-Version: 13\r\n" % (self.port, key))
        #  refusals are HTTP/1.1, so every client library can read them
        answer = self.raw_upgrade ("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n" + base + "\r\n")
        self.assertTrue (answer.startswith ("HTTP/1.1 401 "), answer [:80])
        self.assertIn ('"error":"unauthorized"', answer)
        #  the Upgrade value is case-insensitive
        answer = self.raw_upgrade ("GET /ws HTTP/1.1\r\nUpgrade: WebSocket\r\n" + base
                                   + "Cookie: session=%s\r\n\r\n" % u.cookie)
        self.assertTrue (answer.startswith ("HTTP/1.1 101"), answer [:80])
        #  an upgrade is a GET
        answer = self.raw_upgrade ("POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 0\r\n" + base
                                   + "Cookie: session=%s\r\n\r\n" % u.cookie)
        self.assertTrue (answer.startswith ("HTTP/1.1 405 "), answer [:80])

    def test_python_websockets_reads_refusals (self):
        async def attempt ():
            try:
                await websockets.connect ("ws://127.0.0.1:%d/ws" % self.port)
            except websockets.exceptions.InvalidStatusCode as e:
                return e.status_code
            return 101
        self.assertEqual (asyncio.run (attempt ()), 401)

    def test_ws_without_upgrade (self):
        u = self.user ()
        self.assert_error (self.http ("GET", "/ws"), 401, "unauthorized", "GET /ws, no cookie")
        self.assert_error (self.http ("GET", "/ws", cookie=u.cookie), 400, "bad_request", "GET /ws, no upgrade")

    def test_body_too_large_is_413 (self):
        body = json.dumps ({"nickname": unique ("big"), "password": "x" * 20000}).encode ()
        self.assert_error (self.http ("POST", "/api/register", raw=body), 413, "payload_too_large")
        self.assertEqual (self.http ("GET", "/healthz").status, 200)

    def test_no_store (self):
        u = self.user ()
        for method, path, cookie in (("GET", "/api/me", u.cookie), ("GET", "/api/users", u.cookie),
                                     ("GET", "/api/me", None), ("GET", "/healthz", None)):
            r = self.http (method, path, cookie=cookie)
            self.assertEqual ((r.header ("Cache-Control") or "").lower (), "no-store", (path, r.headers))

    def test_session_token_stored_hashed (self):
        u = self.user ()
        token = u.cookie.encode ()
        if self.server.backend == "sqlite":
            blob = b""
            for suffix in ("", "-wal", "-journal"):
                try:
                    with open (self.server.db + suffix, "rb") as f:
                        blob += f.read ()
                except OSError:
                    pass
            self.assertTrue (blob, "no SQLite file at %s" % self.server.db)
        else:
            r = subprocess.run (["pg_dump", "--data-only", pg_conninfo ()], capture_output=True, timeout=60)
            self.assertEqual (r.returncode, 0, r.stderr)
            blob = r.stdout
        self.assertIn (u.nickname.encode (), blob, "the dump does not even hold the user")
        self.assertNotIn (token, blob, "the session token is stored in clear")


class TimingTests (ServerCase):
    """Wrong nickname and wrong password take about the same time: a real
    (slower) hash, so that skipping it for an unknown nickname shows."""
    server_env = dict (NO_LOGIN_LIMIT, CHAT_AUTH_PASSWORD_OPSLIMIT="2",
                       CHAT_AUTH_PASSWORD_MEMLIMIT_KIB="65536")

    def test_wrong_nickname_and_wrong_password_take_about_the_same_time (self):
        u = register (self.port)

        def timed (body):
            t = time.monotonic ()
            r = self.http ("POST", "/api/login", body)
            self.assertEqual (r.status, 401, r)
            return time.monotonic () - t
        t_nick, t_pw = [], []
        for i in range (7):
            t_nick.append (timed ({"nickname": unique ("ghost"), "password": PASSWORD}))
            t_pw.append (timed ({"nickname": u.nickname, "password": "wrong password %d" % i}))
        m_nick, m_pw = statistics.median (t_nick), statistics.median (t_pw)
        self.assertGreater (m_nick, 0.5 * m_pw,
                            "unknown nickname answers much faster (%.1f ms) than wrong password (%.1f ms)"
                            % (m_nick * 1000, m_pw * 1000))
        self.assertGreater (m_pw, 0.5 * m_nick,
                            "wrong password answers much faster (%.1f ms) than unknown nickname (%.1f ms)"
                            % (m_pw * 1000, m_nick * 1000))


class LoginThrottleTests (ServerCase):
    server_env = {"CHAT_RATE_LIMIT_LOGIN_SLOW_AFTER": "2", "CHAT_RATE_LIMIT_LOGIN_MAX_FAILURES": "4"}

    def attempt (self, nick, password, source):
        return request (self.port, "POST", "/api/login", {"nickname": nick, "password": password},
                        source=source, timeout=60)

    def test_failed_logins_are_throttled_per_address_and_nickname (self):
        x, y, z = (register (self.port, unique (p)) for p in ("thx", "thy", "thz"))
        took = []
        for i in range (4):
            t = time.monotonic ()
            r = self.attempt (x.nickname, "wrong password", "127.0.0.1")
            took.append (time.monotonic () - t)
            self.assert_error (r, 401, "invalid_credentials", "failure %d of 4 allowed" % (i + 1))
        #  slowed after slow_after (2) failures (chatd: 250 ms, then 500 ms)
        self.assertGreater (took [2], 0.2, "3rd attempt not slowed: %r" % took)
        self.assertGreater (took [3], 0.4, "4th attempt not slowed: %r" % took)
        self.assertLess (took [0], took [2], "1st attempt slowed as much as the 3rd: %r" % took)
        r = self.attempt (x.nickname, "wrong password", "127.0.0.1")
        self.assert_error (r, 429, "rate_limited", "5th failed login")
        r = self.attempt (x.nickname, PASSWORD, "127.0.0.1")
        self.assert_error (r, 429, "rate_limited", "right password while refused")
        self.assertIsNone (r.set_cookie ())
        #  per nickname: another address is refused for x
        r = self.attempt (x.nickname, PASSWORD, "127.0.0.2")
        self.assert_error (r, 429, "rate_limited", "x from another address")
        #  ... but may log in as y
        r = self.attempt (y.nickname, PASSWORD, "127.0.0.2")
        self.assertEqual (r.status, 200, "y from a clean address: %r" % r)
        #  per address: 127.0.0.1 is refused for y
        r = self.attempt (y.nickname, PASSWORD, "127.0.0.1")
        self.assert_error (r, 429, "rate_limited", "y from the throttled address")
        #  failures spread over several nicknames from one address
        for i in range (4):
            r = self.attempt (unique ("nobody"), "wrong password", "127.0.0.3")
            self.assert_error (r, 401, "invalid_credentials", "unknown nickname %d" % i)
        r = self.attempt (z.nickname, PASSWORD, "127.0.0.3")
        self.assert_error (r, 429, "rate_limited", "z from an address with 4 failures")
        r = self.attempt (z.nickname, PASSWORD, "127.0.0.4")
        self.assertEqual (r.status, 200, "z from a clean address: %r" % r)


# ---------------------------------------------------------------------------
#   WebSocket

class WsTests (ServerCase):
    server_env = dict (NO_RATE_LIMIT, **NO_LOGIN_LIMIT, CHAT_LIMITS_MAX_MESSAGE_BYTES="200")

    # --- presence ---------------------------------------------------------

    @atest ()
    async def test_online_users_first_frame (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        ids = [e ["user_id"] for e in wa.first ["users"]]
        self.assertNotIn (a.user_id, ids, "online_users lists the user itself")
        wb = await self.connect (b)
        for e in wb.first ["users"]:
            self.assertTrue ({"user_id", "nickname"} <= set (e), e)
        entry = [e for e in wb.first ["users"] if e ["user_id"] == a.user_id]
        self.assertEqual (len (entry), 1, "a missing from b's online_users: %r" % wb.first)
        self.assertEqual (entry [0] ["nickname"], a.nickname)
        self.assertNotIn (b.user_id, [e ["user_id"] for e in wb.first ["users"]])
        f = await wa.expect ("user_online", user_id=b.user_id)
        self.assertEqual (f.get ("nickname"), b.nickname)
        wb2 = await self.connect (b, "b2")
        ids2 = [e ["user_id"] for e in wb2.first ["users"]]
        self.assertIn (a.user_id, ids2)
        self.assertNotIn (b.user_id, ids2, "second connection lists its own user")
        await wa.barrier ()
        await wa.absent ("user_online", user_id=b.user_id)

    @atest ()
    async def test_user_offline_only_when_last_connection_closes (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        wb1 = await self.connect (b, "b1")
        await wa.expect ("user_online", user_id=b.user_id)
        wb2 = await self.connect (b, "b2")
        await wb2.close ()
        await wb1.pm_ok (a.user_id, "still here")
        await wa.expect ("private_message", from_user_id=b.user_id)
        await wa.barrier ()
        await wa.absent ("user_offline", user_id=b.user_id)
        await wb1.close ()
        f = await wa.expect ("user_offline", user_id=b.user_id)
        self.assertEqual (f.get ("nickname"), b.nickname)
        c = self.user ()
        wc = await self.connect (c)
        self.assertNotIn (b.user_id, [e ["user_id"] for e in wc.first ["users"]])
        self.assertIn (a.user_id, [e ["user_id"] for e in wc.first ["users"]])
        await wa.expect ("user_online", user_id=c.user_id)
        #  b comes back: user_online again
        await self.connect (b, "b3")
        await wa.expect ("user_online", user_id=b.user_id, nickname=b.nickname)

    @atest ()
    async def test_users_online_flag (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)

        def online ():
            r = self.http ("GET", "/api/users", cookie=a.cookie)
            self.assertEqual (r.status, 200, r)
            return {e ["user_id"]: e ["online"] for e in r.json ["users"]}
        flags = online ()
        self.assertIs (flags [a.user_id], True)
        self.assertIs (flags [b.user_id], False)
        wb = await self.connect (b)
        await wa.expect ("user_online", user_id=b.user_id)
        self.assertIs (online () [b.user_id], True)
        await wb.close ()
        await wa.expect ("user_offline", user_id=b.user_id)
        self.assertIs (online () [b.user_id], False)

    @atest ()
    async def test_connections_per_user_limit (self):
        a = self.user ()
        for i in range (16):
            await self.connect (a, "a%d" % i)
        status, body = ws_upgrade (self.port, a.cookie)
        self.assertEqual ((status, (body or {}).get ("error")), (429, "too_many_connections"), body)
        await self._clients.pop ().close ()
        b = self.user ()
        wb = await self.connect (b)
        #  one closed: room for one more (once the server saw the close)
        await wb.barrier ()
        deadline = time.monotonic () + 5
        while ws_upgrade (self.port, a.cookie) [0] != 101:
            self.assertLess (time.monotonic (), deadline, "no room after closing a connection")
            await asyncio.sleep (0.1)

    @atest ()
    async def test_metrics_count (self):
        def metrics ():
            r = self.http ("GET", "/metrics")
            self.assertEqual (r.status, 200)
            out = {}
            for l in r.body.decode ().splitlines ():
                if l and not l.startswith ("#"):
                    name, _, value = l.rpartition (" ")
                    out [name.strip ()] = float (value)
            return out
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        before = metrics ()
        for name in ("chatd_connections", "chatd_sessions", "chatd_http_requests_total",
                     "chatd_ws_frames_received_total", "chatd_messages_acknowledged_total",
                     "chatd_messages_failed_total", "chatd_storage_up", "chatd_storage_batches_total",
                     "chatd_messages_stored_total"):
            self.assertIn (name, before, "metric %s missing" % name)
        self.assertGreaterEqual (before ["chatd_connections"], 1)
        self.assertEqual (before ["chatd_storage_up"], 1)
        await wa.pm_ok (b.user_id, "counted")
        await wa.pm (a.user_id, "refused: to myself")
        after = metrics ()
        self.assertGreaterEqual (after ["chatd_messages_acknowledged_total"],
                                 before ["chatd_messages_acknowledged_total"] + 1)
        self.assertGreaterEqual (after ["chatd_messages_failed_total"], before ["chatd_messages_failed_total"] + 1)
        #  the storage counters may reach the front end with the periodic storage status
        deadline = time.monotonic () + 15
        while after ["chatd_messages_stored_total"] < before ["chatd_messages_stored_total"] + 1:
            self.assertLess (time.monotonic (), deadline, "chatd_messages_stored_total did not grow in 15 s: %r"
                             % after)
            await asyncio.sleep (0.2)
            after = metrics ()
        self.assertGreater (after ["chatd_http_requests_total"], before ["chatd_http_requests_total"])

    # --- private messages -------------------------------------------------

    @atest ()
    async def test_private_message_fan_out (self):
        a, b = self.user ("fa"), self.user ("fb")
        wa1, wa2 = await self.connect (a, "a1"), await self.connect (a, "a2")
        wb1, wb2 = await self.connect (b, "b1"), await self.connect (b, "b2")
        cid = unique ("c")
        ack = await wa1.pm (b.user_id, "hello fan-out", cid)
        self.assertEqual (ack ["type"], "message_delivered", ack)
        self.assertTrue (is_id (ack.get ("message_id")), ack)
        self.assertEqual (ack.get ("client_id"), cid)
        self.assertTrue (same (ack.get ("to_user_id"), b.user_id), ack)
        self.assertIs (ack.get ("online"), True, ack)
        check_timestamp (ack.get ("timestamp"))
        mid = ack ["message_id"]
        for c in (wb1, wb2, wa2):
            f = await c.expect ("private_message", message_id=mid)
            check_message (f, from_user_id=a.user_id, to_user_id=b.user_id, nickname=a.nickname,
                           content="hello fan-out", is_read=False, timestamp=ack ["timestamp"])
        await wa1.barrier ()
        await wa1.absent ("private_message", message_id=mid)
        #  and back
        ack2 = await wb2.pm_ok (a.user_id, "and back")
        self.assertGreater (ack2 ["message_id"], mid)
        for c in (wa1, wa2, wb1):
            f = await c.expect ("private_message", message_id=ack2 ["message_id"])
            check_message (f, from_user_id=b.user_id, to_user_id=a.user_id, nickname=b.nickname,
                           content="and back")

    @atest ()
    async def test_message_without_client_id (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        ack = await wa.pm (b.user_id, "no client id", client_id=None)
        self.assertEqual (ack ["type"], "message_delivered", ack)
        self.assertIsNone (ack.get ("client_id"), ack)
        f = await wb.expect ("private_message", message_id=ack ["message_id"])
        check_message (f, content="no client id", from_user_id=a.user_id)

    @atest ()
    async def test_offline_recipient_gets_it_later (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        ack = await wa.pm_ok (b.user_id, "while you were away")
        self.assertIs (ack ["online"], False, ack)
        wb = await self.connect (b)
        h = await wb.request ({"type": "load_history", "with_user_id": a.user_id})
        self.assertEqual (h ["type"], "history_loaded", h)
        self.assertEqual (len (h ["messages"]), 1, h)
        check_message (h ["messages"] [0], message_id=ack ["message_id"], from_user_id=a.user_id,
                       to_user_id=b.user_id, content="while you were away", is_read=False,
                       timestamp=ack ["timestamp"], nickname=a.nickname)
        s = await wb.request ({"type": "sync", "after_id": 0})
        self.assertEqual ([m ["message_id"] for m in s ["messages"]], [ack ["message_id"]], s)
        r = self.http ("GET", "/api/conversations", cookie=b.cookie)
        self.assertEqual (r.status, 200, r)
        conv = conv_by_user (r.json ["conversations"], a.user_id)
        self.assertIsNotNone (conv, r)
        self.assertEqual (conv ["unread"], 1, conv)
        self.assertEqual (conv ["nickname"], a.nickname)
        check_message (conv ["last_message"], message_id=ack ["message_id"], content="while you were away")

    @atest ()
    async def test_client_id_dedupe (self):
        a, b = self.user (), self.user ()
        wa1, wa2, wb = await self.connect (a, "a1"), await self.connect (a, "a2"), await self.connect (b)
        cid = unique ("dup")
        first = await wa1.pm_ok (b.user_id, "only once", cid)
        mid = first ["message_id"]
        await wb.expect ("private_message", message_id=mid)
        await wa2.expect ("private_message", message_id=mid)
        again = await wa1.pm_ok (b.user_id, "only once", cid)
        self.assertEqual (again ["message_id"], mid, "resend got a new id")
        self.assertEqual (again.get ("client_id"), cid)
        other = await wa2.pm_ok (b.user_id, "different text, same client_id", cid)
        self.assertEqual (other ["message_id"], mid, "same client_id from another connection")
        await wa1.close ()
        wa3 = await self.connect (a, "a3")
        third = await wa3.pm_ok (b.user_id, "only once", cid)
        self.assertEqual (third ["message_id"], mid, "same client_id after a reconnect")
        await wb.barrier ()
        await wb.absent ("private_message")
        await wa2.absent ("private_message")
        h = await history_all (wb, a.user_id)
        self.assertEqual ([m ["message_id"] for m in h], [mid], h)
        self.assertEqual (h [0] ["content"], "only once")

    @atest ()
    async def test_client_id_is_per_sender (self):
        a, c, b = self.user (), self.user (), self.user ()
        wa, wc, wb = await self.connect (a), await self.connect (c), await self.connect (b)
        cid = unique ("shared")
        m1 = await wa.pm_ok (b.user_id, "from a", cid)
        m2 = await wc.pm_ok (b.user_id, "from c", cid)
        self.assertNotEqual (m1 ["message_id"], m2 ["message_id"])
        await wb.expect ("private_message", message_id=m1 ["message_id"], content="from a")
        await wb.expect ("private_message", message_id=m2 ["message_id"], content="from c")

    @atest ()
    async def test_from_user_id_is_ignored (self):
        a, b, c = self.user (), self.user (), self.user ()
        wa, wb, wc = await self.connect (a), await self.connect (b), await self.connect (c)
        ack = await wa.pm_ok (b.user_id, "spoofed?", from_user_id=c.user_id)
        f = await wb.expect ("private_message", message_id=ack ["message_id"])
        check_message (f, from_user_id=a.user_id, nickname=a.nickname, to_user_id=b.user_id)
        self.assertEqual (await sync_all (wc), [], "the spoofed sender sees the message")
        h = await history_all (wb, a.user_id)
        self.assertEqual ([m ["message_id"] for m in h], [ack ["message_id"]])

    @atest ()
    async def test_ids_and_timestamps (self):
        a, b = self.user (), self.user ()
        self.assertGreater (b.user_id, a.user_id)
        wa, wb = await self.connect (a), await self.connect (b)
        acks = []
        for i in range (5):
            acks.append (await (wa if i % 2 == 0 else wb).pm_ok (b.user_id if i % 2 == 0 else a.user_id,
                                                                 "seq %d" % i))
        ids = [x ["message_id"] for x in acks]
        self.assertEqual (ids, sorted (set (ids)), "message ids do not grow: %r" % ids)
        stamps = [x ["timestamp"] for x in acks]
        for ts in stamps:
            check_timestamp (ts)
        self.assertEqual (stamps, sorted (stamps), "timestamps go backwards")
        h = await history_all (wa, b.user_id)
        self.assertEqual ([m ["message_id"] for m in h], ids)
        self.assertEqual ([m ["timestamp"] for m in h], stamps)

    @atest ()
    async def test_content_is_returned_exactly (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        contents = ["  leading and trailing spaces  ", "tab\tnew\nline\r\ncrlf", "x",
                    "<b>bold</b> & \"quotes\" 'single' \\ backslash </script>",
                    "emoji 👋🏽 ünïcödé 中文 עברית", '{"type":"private_message"}', "\nnewline first",
                    "é" * 100, "€" * 66 + "ab", "𝄞" * 50]
        for c in contents:
            self.assertLessEqual (len (c.encode ()), 200)
        acks = [await wa.pm_ok (b.user_id, c) for c in contents]
        for ack, c in zip (acks, contents):
            f = await wb.expect ("private_message", message_id=ack ["message_id"])
            self.assertEqual (f ["content"], c)
        h = await history_all (wb, a.user_id)
        self.assertEqual ([m ["content"] for m in h], contents)

    @atest ()
    async def test_invalid_content (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        bad = ["", " ", "   \t\n\r  ", "\n", "ctrl\x01char", "bell\x07", "esc\x1b[31m red",
               "backspace\x08", "unit sep\x1f", "x" * 201, "é" * 100 + "a", "€" * 67]
        for content in bad:
            cid = unique ("bad")
            f = await wa.pm (b.user_id, content, cid)
            self.assertEqual (f ["type"], "message_failed", "content %r: %r" % (content [:40], f))
            self.assertEqual (f.get ("error"), "invalid_content", "content %r: %r" % (content [:40], f))
            self.assertEqual (f.get ("client_id"), cid)
            self.assertTrue (same (f.get ("to_user_id"), b.user_id), f)
            self.assertIsInstance (f.get ("message"), str, f)
            self.assertNotIn ("retry_after_ms", f)
        ok = await self.still_usable (wa, b)
        self.assertEqual ([m ["message_id"] for m in await sync_all (wb)], [ok ["message_id"]],
                          "a refused message was stored")
        await wb.expect ("private_message", message_id=ok ["message_id"])
        await wb.absent ("private_message", where=lambda f: f ["message_id"] != ok ["message_id"])

    @atest ()
    async def test_nul_character_is_invalid_content (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        f = await wa.pm (b.user_id, "nul\x00byte", "nul-1")
        self.assertEqual ((f ["type"], f.get ("error")), ("message_failed", "invalid_content"), f)
        self.assertEqual (await sync_all (wa), [])

    @atest ()
    async def test_unknown_user_and_self (self):
        a = self.user ()
        wa = await self.connect (a)
        for to in (999999999, 2 ** 62):
            f = await wa.pm (to, "to nobody", "nobody-%d" % to)
            self.assertEqual (f ["type"], "message_failed", f)
            self.assertEqual (f.get ("error"), "unknown_user", f)
            self.assertEqual (f.get ("client_id"), "nobody-%d" % to)
            self.assertTrue (same (f.get ("to_user_id"), to), f)
            self.assertIsInstance (f.get ("message"), str, f)
        f = await wa.pm (a.user_id, "to myself", "self-1")
        self.assertEqual ((f ["type"], f.get ("error")), ("message_failed", "invalid_recipient"), f)
        self.assertTrue (same (f.get ("to_user_id"), a.user_id), f)
        self.assertEqual (f.get ("client_id"), "self-1")
        self.assertEqual (await sync_all (wa), [], "a refused message was stored")

    @atest ()
    async def test_private_message_bad_request (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        base = {"type": "private_message", "to_user_id": b.user_id, "content": "x"}
        cases = [
            {"to_user_id": None}, {"to_user_id": str (b.user_id)}, {"to_user_id": b.user_id + 0.5},
            {"to_user_id": True}, {"to_user_id": [b.user_id]},
            {"content": None}, {"content": 5}, {"content": ["x"]}, {"content": {"text": "x"}},
            {"client_id": 5}, {"client_id": ["c"]}, {"client_id": "x" * 65}, {"client_id": ""}, {"client_id": "é" * 32 + "a"},
        ]
        frames = [dict (base, **c) for c in cases]
        for key in ("to_user_id", "content"):
            f = dict (base)
            del f [key]
            frames.append (f)
        for frame in frames:
            await self.ws_error (wa, "bad_request", frame)
            await self.still_usable (wa, b)
        #  64 bytes is still a valid client_id
        ok = await wa.pm_ok (b.user_id, "64-byte client_id", "é" * 32)
        self.assertEqual (ok ["client_id"], "é" * 32)
        stored = await sync_all (wa)
        self.assertEqual (len (stored), len (frames) + 1, "a bad_request message was stored")

    # --- bad frames -------------------------------------------------------

    @atest ()
    async def test_bad_frames_keep_connection_open (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        for text in ("not json", "[1, 2]", "42", '"private_message"', "null", "true",
                     '{"type": "private_message",', "{'type': 'typing'}", ""):
            await self.ws_error (wa, "bad_json", text)
            await self.still_usable (wa, b)
        await self.ws_error (wa, "unknown_type", {"type": "no_such_type"})
        await self.still_usable (wa, b)
        await self.ws_error (wa, "unknown_type", {"type": "PRIVATE_MESSAGE", "to_user_id": b.user_id,
                                                   "content": "x"})
        await self.still_usable (wa, b)
        await self.ws_error (wa, "unknown_type", {"type": "no_such_type", "request_id": "q-1"})
        await self.still_usable (wa, b)
        #  a missing or non-string type (chatd: unknown_type)
        for frame in ({}, {"type": 5}, {"type": None}, {"type": ["private_message"]},
                      {"to_user_id": b.user_id, "content": "x"}):
            await self.ws_error (wa, "unknown_type", frame)
            await self.still_usable (wa, b)
        h = await history_all (wa, b.user_id)
        self.assertTrue (all (m ["content"].startswith ("still usable") for m in h), h)

    @atest ()
    async def test_request_bad_fields (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        bad = [
            {"type": "load_history"},
            {"type": "load_history", "with_user_id": "x"},
            {"type": "load_history", "with_user_id": b.user_id, "before_id": "x"},
            {"type": "load_history", "with_user_id": b.user_id, "limit": 0},
            {"type": "load_history", "with_user_id": b.user_id, "limit": -1},
            {"type": "load_history", "with_user_id": b.user_id, "limit": "10"},
            {"type": "load_history", "with_user_id": b.user_id, "limit": 1.5},
            {"type": "sync", "after_id": "x"},
            {"type": "sync", "after_id": 0, "limit": "x"},
            {"type": "sync", "after_id": -1},
            {"type": "sync", "after_id": 1.5},
        ]
        for i, frame in enumerate (bad):
            rid = "bad-%d" % i
            frame = dict (frame, request_id=rid)
            f = await self.ws_error (wa, "bad_request", frame, rid)
            self.assertEqual (f ["request_id"], rid)
            await self.still_usable (wa, b)
        #  requests without an answer of their own
        for frame in ({"type": "mark_read", "with_user_id": b.user_id},
                      {"type": "mark_read", "up_to_id": 5},
                      {"type": "mark_read", "with_user_id": "x", "up_to_id": 5},
                      {"type": "typing", "is_typing": True},
                      {"type": "typing", "to_user_id": b.user_id},
                      {"type": "typing", "to_user_id": b.user_id, "is_typing": "yes"},
                      {"type": "typing", "to_user_id": "x", "is_typing": True}):
            await self.ws_error (wa, "bad_request", frame)
            await self.still_usable (wa, b)
        f = await self.ws_error (wa, "bad_request", {"type": "load_history", "request_id": 77}, 77)
        self.assertTrue (same (f ["request_id"], 77), f)

    @atest ()
    async def test_binary_frame_closes_1003 (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        await wa.ws.send (json.dumps ({"type": "private_message", "to_user_id": b.user_id,
                                       "content": "binary"}).encode ())
        self.assertEqual (await wa.expect_close (), 1003)
        wa2 = await self.connect (a, "again")
        await self.still_usable (wa2, b)
        self.assertEqual ([m ["content"] for m in await sync_all (wa2) if m ["content"] == "binary"], [])

    def frame_of_size (self, to, size):
        base = json.dumps ({"type": "private_message", "to_user_id": to, "content": ""})
        text = json.dumps ({"type": "private_message", "to_user_id": to, "content": "x" * (size - len (base))})
        assert len (text.encode ()) == size
        return text

    @atest ()
    async def test_frame_of_exactly_64KiB_is_not_closed (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        for size in (60000, 65536):
            await wa.send (self.frame_of_size (b.user_id, size))
            f = await wa.expect ("message_failed", to_user_id=b.user_id)
            self.assertEqual (f ["error"], "invalid_content", "frame of %d bytes: %r" % (size, f))
            await self.still_usable (wa, b)

    @atest ()
    async def test_frame_over_64KiB_closes_1009 (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        await wa.send (self.frame_of_size (b.user_id, 65537))
        self.assertEqual (await wa.expect_close (), 1009)
        wa2 = await self.connect (a, "again")
        await wa2.send (self.frame_of_size (b.user_id, 200000))
        self.assertEqual (await wa2.expect_close (), 1009)
        self.assertEqual (self.http ("GET", "/healthz").status, 200)
        wa3 = await self.connect (a, "again2")
        self.assertEqual (await sync_all (wa3), [])

    @atest ()
    async def test_invalid_utf8_text_frame (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        payload = (b'{"type":"private_message","to_user_id":%d,"content":"bad \xff\xfe utf8","client_id":"u8"}'
                   % b.user_id)
        await wa.ws.write_frame (True, 0x1, payload)
        #  the contract does not say: an error or a close (RFC 6455: 1007).
        #  Wait for either; never an acknowledgement.
        loop = asyncio.get_running_loop ()
        deadline = loop.time () + 3
        while loop.time () < deadline:
            try:
                f = await wa._read (deadline - loop.time ())
            except (asyncio.TimeoutError, Exception):
                break
            self.assertNotIn (f ["type"], ("message_delivered", "private_message"), f)
            if f ["type"] == "error":
                break
        self.assertEqual (self.http ("GET", "/healthz").status, 200)
        wb = await self.connect (b)
        self.assertEqual (await sync_all (wb), [], "a message with invalid UTF-8 was stored")

    # --- history ----------------------------------------------------------

    @atest ()
    async def test_history_paging (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        acks = []
        for i in range (7):
            if i % 3 == 2:
                acks.append ((b, await wb.pm_ok (a.user_id, "h%d" % i)))
            else:
                acks.append ((a, await wa.pm_ok (b.user_id, "h%d" % i)))
        ids = [x ["message_id"] for _, x in acks]
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "limit": 3,
                               "request_id": "r-9"})
        self.assertEqual (r ["type"], "history_loaded", r)
        self.assertEqual (r ["request_id"], "r-9")
        self.assertTrue (same (r.get ("with_user_id"), b.user_id), r)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [4:7])
        self.assertIs (r ["has_more"], True)
        for (sender, ack), m in zip (acks [4:7], r ["messages"]):
            other = b if sender is a else a
            check_message (m, from_user_id=sender.user_id, to_user_id=other.user_id,
                           nickname=sender.nickname, timestamp=ack ["timestamp"])
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "limit": 3,
                               "before_id": ids [4]})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [1:4])
        self.assertIs (r ["has_more"], True)
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "limit": 3,
                               "before_id": ids [1]})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [0:1])
        self.assertIs (r ["has_more"], False)
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "before_id": ids [0]})
        self.assertEqual (r ["messages"], [])
        self.assertIs (r ["has_more"], False)
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "before_id": ids [3] + 0})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [0:3])
        r = await wb.request ({"type": "load_history", "with_user_id": a.user_id})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids, "b's view")
        self.assertEqual ([m ["content"] for m in r ["messages"]], ["h%d" % i for i in range (7)])
        self.assertIs (r ["has_more"], False)
        #  chatd: before_id 0 is the same as absent; an unknown partner is an empty page
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "before_id": 0})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids)
        r = await wa.request ({"type": "load_history", "with_user_id": 999999999})
        self.assertEqual ((r ["type"], r.get ("messages"), r.get ("has_more")), ("history_loaded", [], False), r)
        #  request_id is echoed as given: a number stays a number
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "request_id": 42})
        self.assertTrue (same (r ["request_id"], 42), r)
        #  without a request_id the answer still comes
        await wa.send ({"type": "load_history", "with_user_id": b.user_id, "limit": 1})
        r = await wa.expect ("history_loaded", where=lambda f: f.get ("request_id") is None)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [6:])

    @atest (timeout=120)
    async def test_history_limits (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        acks = await send_many (wa, b.user_id, 105, unique ("hl"))
        ids = [x ["message_id"] for x in acks]
        self.assertEqual (ids, sorted (set (ids)))
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [-50:], "default limit 50")
        self.assertIs (r ["has_more"], True)
        for limit in (100, 150, 10 ** 6):
            r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "limit": limit})
            self.assertEqual (r ["type"], "history_loaded", "limit %d: %r" % (limit, r))
            self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [-100:], "limit %d" % limit)
            self.assertIs (r ["has_more"], True)
        r = await wa.request ({"type": "load_history", "with_user_id": b.user_id, "limit": 100,
                               "before_id": ids [5]})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [:5])
        self.assertIs (r ["has_more"], False)

    @atest ()
    async def test_only_own_conversations (self):
        a, b, c = self.user (), self.user (), self.user ()
        wa, wc = await self.connect (a), await self.connect (c)
        secret = await wa.pm_ok (b.user_id, "secret between a and b")
        for other in (a, b):
            r = await wc.request ({"type": "load_history", "with_user_id": other.user_id})
            self.assertIn (r ["type"], ("history_loaded", "error"), r)
            if r ["type"] == "history_loaded":
                self.assertEqual (r ["messages"], [], "c read a conversation it is not in")
        self.assertEqual (await sync_all (wc), [])
        r = self.http ("GET", "/api/conversations", cookie=c.cookie)
        self.assertEqual (r.json ["conversations"], [])
        #  c cannot mark a's message to b as read
        await wc.send ({"type": "mark_read", "with_user_id": a.user_id, "up_to_id": secret ["message_id"]})
        await wc.barrier ()
        r = self.http ("GET", "/api/conversations", cookie=b.cookie)
        self.assertEqual (conv_by_user (r.json ["conversations"], a.user_id) ["unread"], 1)

    # --- sync -------------------------------------------------------------

    @atest ()
    async def test_sync_paging (self):
        s, x, y = self.user ("s"), self.user ("x"), self.user ("y")
        ws, wx, wy = await self.connect (s), await self.connect (x), await self.connect (y)
        m1 = await ws.pm_ok (x.user_id, "m1")
        m2 = await wy.pm_ok (s.user_id, "m2")
        m3 = await wx.pm_ok (s.user_id, "m3")
        m4 = await ws.pm_ok (y.user_id, "m4")
        await wx.pm_ok (y.user_id, "m5 not s's")
        m6 = await wy.pm_ok (s.user_id, "m6")
        ids = [m ["message_id"] for m in (m1, m2, m3, m4, m6)]
        r = await ws.request ({"type": "sync", "after_id": 0, "limit": 2, "request_id": "r-10"})
        self.assertEqual (r ["type"], "synced", r)
        self.assertEqual (r ["request_id"], "r-10")
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [0:2])
        self.assertIs (r ["has_more"], True)
        for m in r ["messages"]:
            check_message (m)
        check_message (r ["messages"] [0], from_user_id=s.user_id, to_user_id=x.user_id, content="m1",
                       nickname=s.nickname)
        check_message (r ["messages"] [1], from_user_id=y.user_id, to_user_id=s.user_id, content="m2",
                       nickname=y.nickname)
        r = await ws.request ({"type": "sync", "after_id": ids [1], "limit": 2})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [2:4])
        self.assertIs (r ["has_more"], True)
        r = await ws.request ({"type": "sync", "after_id": ids [3], "limit": 2})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [4:])
        self.assertIs (r ["has_more"], False)
        r = await ws.request ({"type": "sync", "after_id": ids [4]})
        self.assertEqual (r ["messages"], [])
        self.assertIs (r ["has_more"], False)
        r = await ws.request ({"type": "sync", "after_id": 0, "request_id": 7})
        self.assertTrue (same (r ["request_id"], 7), r)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids)
        self.assertEqual ([m ["content"] for m in r ["messages"]], ["m1", "m2", "m3", "m4", "m6"])
        self.assertIs (r ["has_more"], False)
        r = await ws.request ({"type": "sync", "after_id": ids [1]})
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [2:])
        await ws.send ({"type": "sync", "after_id": ids [3]})
        r = await ws.expect ("synced", where=lambda f: f.get ("request_id") is None)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [4:])

    @atest (timeout=240)
    async def test_sync_limits (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        acks = await send_many (wa, b.user_id, 1005, unique ("sl"))
        ids = [x ["message_id"] for x in acks]
        wb = await self.connect (b)
        r = await wb.request ({"type": "sync", "after_id": 0}, timeout=30)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [:500], "default limit 500")
        self.assertIs (r ["has_more"], True)
        r = await wb.request ({"type": "sync", "after_id": 0, "limit": 5000}, timeout=30)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [:1000], "limit clamped to 1000")
        self.assertIs (r ["has_more"], True)
        r = await wb.request ({"type": "sync", "after_id": ids [999], "limit": 1000}, timeout=30)
        self.assertEqual ([m ["message_id"] for m in r ["messages"]], ids [1000:])
        self.assertIs (r ["has_more"], False)

    # --- conversations, read state, typing ------------------------------

    @atest ()
    async def test_conversations (self):
        a, b, c = self.user ("ca"), self.user ("cb"), self.user ("cc")
        wa, wb, wc = await self.connect (a), await self.connect (b), await self.connect (c)
        await wb.pm_ok (a.user_id, "b1")
        await wc.pm_ok (a.user_id, "c1")
        m3 = await wb.pm_ok (a.user_id, "b2")
        m4 = await wa.pm_ok (c.user_id, "a to c")

        def convs (u):
            r = self.http ("GET", "/api/conversations", cookie=u.cookie)
            self.assertEqual (r.status, 200, r)
            self.assert_json (r)
            for e in r.json ["conversations"]:
                self.assertTrue ({"user_id", "nickname", "last_message", "unread"} <= set (e), e)
                check_message (e ["last_message"])
            return r.json ["conversations"]
        cs = convs (a)
        self.assertEqual ([e ["user_id"] for e in cs], [c.user_id, b.user_id], "most recent first")
        self.assertEqual ([e ["nickname"] for e in cs], [c.nickname, b.nickname])
        self.assertEqual ([e ["unread"] for e in cs], [1, 2])
        check_message (cs [0] ["last_message"], message_id=m4 ["message_id"], from_user_id=a.user_id,
                       to_user_id=c.user_id, content="a to c", nickname=a.nickname, is_read=False,
                       timestamp=m4 ["timestamp"])
        check_message (cs [1] ["last_message"], message_id=m3 ["message_id"], content="b2",
                       from_user_id=b.user_id, nickname=b.nickname)
        m5 = await wb.pm_ok (a.user_id, "b3")
        cs = convs (a)
        self.assertEqual ([e ["user_id"] for e in cs], [b.user_id, c.user_id])
        self.assertEqual ([e ["unread"] for e in cs], [3, 1])
        self.assertEqual (cs [0] ["last_message"] ["message_id"], m5 ["message_id"])
        cs = convs (b)
        self.assertEqual ([(e ["user_id"], e ["unread"]) for e in cs], [(a.user_id, 0)])
        self.assertEqual (cs [0] ["nickname"], a.nickname)

    @atest ()
    async def test_mark_read (self):
        a, b = self.user (), self.user ()
        wa1, wa2 = await self.connect (a, "a1"), await self.connect (a, "a2")
        wb = await self.connect (b)
        m = [await wa1.pm_ok (b.user_id, "r%d" % i) for i in range (3)]
        back = await wb.pm_ok (a.user_id, "unread by a")

        def unread (u, other):
            r = self.http ("GET", "/api/conversations", cookie=u.cookie)
            return conv_by_user (r.json ["conversations"], other.user_id) ["unread"]
        self.assertEqual (unread (b, a), 3)
        self.assertEqual (unread (a, b), 1)
        await wb.send ({"type": "mark_read", "with_user_id": a.user_id, "up_to_id": m [1] ["message_id"]})
        for c in (wa1, wa2):
            f = await c.expect ("messages_read", by_user_id=b.user_id)
            self.assertTrue (same (f.get ("up_to_id"), m [1] ["message_id"]), f)
        self.assertEqual (unread (b, a), 1)
        self.assertEqual (unread (a, b), 1, "b's read marked a's incoming")
        h = await history_all (wa1, b.user_id)
        read = {x ["message_id"]: x ["is_read"] for x in h}
        self.assertEqual ([read [x ["message_id"]] for x in m], [True, True, False])
        self.assertIs (read [back ["message_id"]], False)
        await wb.send ({"type": "mark_read", "with_user_id": a.user_id, "up_to_id": back ["message_id"]})
        f = await wa2.expect ("messages_read", by_user_id=b.user_id, up_to_id=back ["message_id"])
        self.assertEqual (unread (b, a), 0)
        h = await history_all (wb, a.user_id)
        self.assertEqual ([x ["is_read"] for x in h], [True, True, True, False])
        #  a reads b's message
        await wa1.send ({"type": "mark_read", "with_user_id": b.user_id, "up_to_id": back ["message_id"]})
        await wb.expect ("messages_read", by_user_id=a.user_id, up_to_id=back ["message_id"])
        self.assertEqual (unread (a, b), 0)

    @atest ()
    async def test_typing (self):
        a, b = self.user (), self.user ()
        wa1, wa2 = await self.connect (a, "a1"), await self.connect (a, "a2")
        wb1, wb2 = await self.connect (b, "b1"), await self.connect (b, "b2")
        await wa1.send ({"type": "typing", "to_user_id": b.user_id, "is_typing": True})
        for c in (wb1, wb2):
            f = await c.expect ("typing", from_user_id=a.user_id)
            self.assertEqual (f.get ("nickname"), a.nickname)
            self.assertIs (f.get ("is_typing"), True)
        await wa1.send ({"type": "typing", "to_user_id": b.user_id, "is_typing": False})
        for c in (wb1, wb2):
            await c.expect ("typing", from_user_id=a.user_id, is_typing=False, nickname=a.nickname)
        await wa2.barrier ()
        await wa2.absent ("typing")
        await wa1.absent ("typing")
        self.assertEqual (await sync_all (wb1), [], "typing was stored")
        #  typing to someone offline: no error
        d = register (self.port)
        await wa1.send ({"type": "typing", "to_user_id": d.user_id, "is_typing": True})
        await wa1.barrier ()
        await wa1.absent ("error")

    @atest ()
    async def test_typing_flood_is_dropped_silently (self):
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        for i in range (200):
            await wa.send ({"type": "typing", "to_user_id": b.user_id, "is_typing": i % 2 == 0})
        await wb.expect ("typing", from_user_id=a.user_id)
        await wa.barrier ()
        await wa.absent (where=lambda f: f ["type"] in ("error", "message_failed"))
        await self.still_usable (wa, b)
        await wb.barrier ()
        await wb.absent ("no-such-frame", timeout=0.5)
        got = 1 + len ([f for f in wb.buf if f ["type"] == "typing"])
        self.assertLess (got, 200, "no typing event was dropped")


# ---------------------------------------------------------------------------
#   Limits

class BackPressureTests (ServerCase):
    server_env = dict (NO_RATE_LIMIT, **NO_LOGIN_LIMIT, CHAT_LIMITS_MAX_INFLIGHT_PER_CONNECTION="4")

    @atest (timeout=60)
    async def test_a_fast_sender_is_slowed_not_dropped (self):
        """With 4 unanswered messages allowed, a client that pipelines 300
        is read only as answers come back: every message is still stored
        and acknowledged once, in order."""
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        n = 300
        for i in range (n):
            await wa.send ({"type": "private_message", "to_user_id": b.user_id,
                            "content": "bp %d" % i, "client_id": "bp-%d" % i})
        acks = [await wa.expect ("message_delivered", timeout=20) for _ in range (n)]
        self.assertEqual ([x ["client_id"] for x in acks], ["bp-%d" % i for i in range (n)])
        ids = [x ["message_id"] for x in acks]
        self.assertEqual (ids, sorted (ids))
        self.assertEqual (len (set (ids)), n)
        stored = [m for m in await sync_all (wb) if m ["from_user_id"] == a.user_id]
        self.assertEqual ([m ["content"] for m in stored], ["bp %d" % i for i in range (n)])
        #  ... and reading that connection really was paused on the way
        self.assertGreater (metric (self.port, "chatd_connections_paused_total"), 0)
        #  answers that were queued together went out in one write
        self.assertLess (metric (self.port, "chatd_ws_writes_total"),
                         metric (self.port, "chatd_ws_frames_sent_total"))
        #  the connection is usable afterwards
        await wa.pm_ok (b.user_id, "after the flood")


class PresenceBatchTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_WEBSOCKET_PRESENCE_DELAY_MS="3000")

    @atest (timeout=30)
    async def test_presence_changes_go_out_together_and_in_order (self):
        """user_online frames wait up to presence_delay_ms and go to each
        connection in one write; a frame that cannot wait takes them along,
        in order."""
        a, b, c, d, e = (self.user () for _ in range (5))
        wa = await self.connect (a)
        frames0 = metric (self.port, "chatd_ws_frames_sent_total")
        writes0 = metric (self.port, "chatd_ws_writes_total")
        wb, wc, wd = [await self.connect (u) for u in (b, c, d)]
        #  3 online_users + 3 user_online to a + 2 to b + 1 to c, each once
        for w, later in ((wa, (b, c, d)), (wb, (c, d)), (wc, (d,))):
            for u in later:
                await w.expect ("user_online", user_id=u.user_id)
        frames = metric (self.port, "chatd_ws_frames_sent_total") - frames0
        writes = metric (self.port, "chatd_ws_writes_total") - writes0
        for w in (wa, wb, wc, wd):
            await w.barrier ()
            await w.absent ("user_online")
        self.assertGreaterEqual (frames, 9)
        self.assertLess (writes, frames)
        #  e comes online, then writes to a at once: a gets user_online
        #  first, with the message, not after the delay
        we = await self.connect (e)
        start = asyncio.get_running_loop ().time ()
        await we.pm_ok (a.user_id, "hello")
        got = await wa.expect ("private_message", from_user_id=e.user_id, timeout=2)
        self.assertLess (asyncio.get_running_loop ().time () - start, 2.5)
        types = [(f ["type"], f.get ("user_id", f.get ("from_user_id"))) for f in wa.buf + [got]]
        self.assertIn (("user_online", e.user_id), types, "user_online did not come with the message")
        self.assertLess (types.index (("user_online", e.user_id)), types.index (("private_message", e.user_id)), types)


class RateLimitTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_RATE_LIMIT_MESSAGES_PER_SECOND="1", CHAT_RATE_LIMIT_BURST="3",
                       CHAT_RATE_LIMIT_CLOSE_AFTER="3")

    @atest ()
    async def test_rate_limited_then_allowed_again (self):
        a, b, c = self.user (), self.user (), self.user ()
        wa1, wa2, wb, wc = (await self.connect (a, "a1"), await self.connect (a, "a2"),
                            await self.connect (b), await self.connect (c))
        acks = [await wa1.pm_ok (b.user_id, "burst %d" % i) for i in range (3)]
        f = await wa1.pm (b.user_id, "one too many", "over-1")
        self.assertEqual ((f ["type"], f.get ("error")), ("message_failed", "rate_limited"), f)
        self.assertEqual (f.get ("client_id"), "over-1")
        self.assertTrue (same (f.get ("to_user_id"), b.user_id), f)
        retry = f.get ("retry_after_ms")
        self.assertTrue (isinstance (retry, int) and not isinstance (retry, bool) and 0 < retry <= 1500,
                         "retry_after_ms: %r" % (f,))
        #  the bucket is the user's, not the connection's
        f2 = await wa2.pm (b.user_id, "other connection", "over-2")
        self.assertEqual ((f2 ["type"], f2.get ("error")), ("message_failed", "rate_limited"), f2)
        #  other users are not affected
        await wc.pm_ok (b.user_id, "c is fine")
        await asyncio.sleep (f2 ["retry_after_ms"] / 1000 + 0.1)   # the refill is the event
        acks.append (await wa1.pm_ok (b.user_id, "after waiting"))
        stored = [m for m in await sync_all (wb) if m ["from_user_id"] == a.user_id]
        self.assertEqual ([m ["message_id"] for m in stored], [x ["message_id"] for x in acks])
        self.assertNotIn ("one too many", [m ["content"] for m in stored])

    def flood (self, cookie, to, n):
        """Pipeline n private messages over a raw socket (python-websockets
        drops what it had not read yet once a write fails, and a flooding
        client does write into the closed connection), then read every
        answer: (answers, close code or None)."""
        raw = RawWS (self.port, cookie)
        self.assertEqual (raw.status, 101)
        for i in range (n):
            cid = "flood-%d" % i
            try:
                raw.send_frame (0x1, json.dumps ({"type": "private_message", "to_user_id": to,
                                                  "content": cid, "client_id": cid}).encode ())
            except OSError:
                break           #  the server closed the connection: expected
        answers, code = [], None
        try:
            while True:
                op, payload = raw.read_frame (10)
                if op == 0x8:
                    code = int.from_bytes (payload [:2], "big") if len (payload) >= 2 else 1005
                    break
                if op == 0x1:
                    answers.append (json.loads (payload))
        except (EOFError, OSError):
            pass
        finally:
            raw.close ()
        return answers, code

    @atest ()
    async def test_close_1008_after_repeated_refusals (self):
        a, b = self.user (), self.user ()
        answers, code = await asyncio.to_thread (self.flood, a.cookie, b.user_id, 15)
        self.assertEqual (answers [:1] and answers [0].get ("type"), "online_users", answers [:1])
        self.assertEqual (code, 1008, "no close frame 1008; frames: %r" % answers)
        acked = [f ["client_id"] for f in answers if f ["type"] == "message_delivered"]
        refused = [f ["client_id"] for f in answers if f ["type"] == "message_failed"]
        self.assertTrue (refused, "closed without a rate_limited answer first: %r" % answers)
        for f in answers:
            if f ["type"] == "message_failed":
                self.assertEqual (f ["error"], "rate_limited", f)
        self.assertLessEqual (len (acked), 4, answers)
        #  not banned: a new connection may send once the bucket refilled
        wa2 = await self.connect (a, "again")
        await asyncio.sleep (1.1)   # the refill is the event
        ok = await wa2.pm_ok (b.user_id, "after the close")
        stored = {m ["content"]: m ["message_id"] for m in await sync_all (wa2)}
        for cid in acked:
            self.assertIn (cid, stored, "an acknowledged message was not stored")
        for cid in refused:
            self.assertNotIn (cid, stored, "a refused message was stored")
        self.assertEqual (stored ["after the close"], ok ["message_id"])


class DefaultsTests (ServerCase):
    """The built-in defaults of the contract: max_message_bytes 4096, burst 20."""
    server_env = dict (NO_LOGIN_LIMIT)

    @atest ()
    async def test_default_max_message_bytes (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        await wa.pm_ok (b.user_id, "x" * 4096)
        await wa.pm_ok (b.user_id, "é" * 2048)
        for content in ("x" * 4097, "é" * 2048 + "a"):
            f = await wa.pm (b.user_id, content)
            self.assertEqual ((f ["type"], f.get ("error")), ("message_failed", "invalid_content"), f)

    @atest ()
    async def test_largest_message_arrives_whole (self):
        #  Twice the server's 2 KiB receive buffer per connection, as raw
        #  UTF-8: the frame is read in pieces. The client_id before the
        #  content grows by a byte each time, so the cuts fall inside 2-,
        #  3- and 4-byte characters; each message must come out whole
        a, b = self.user (), self.user ()
        wa, wb = await self.connect (a), await self.connect (b)
        content = "é€😀a" * 409
        self.assertEqual (len (content.encode ()), 4090)
        for k in range (10):
            cid = "big-" + "x" * k
            await wa.send (json.dumps ({"type": "private_message", "client_id": cid,
                                        "to_user_id": b.user_id, "content": content},
                                       ensure_ascii=False))
            ack = await wa.wait_answer (b.user_id, cid, 10.0)
            self.assertEqual (ack ["type"], "message_delivered", ack)
            f = await wb.expect ("private_message", message_id=ack ["message_id"])
            check_message (f, content=content, from_user_id=a.user_id)
        h = await wb.request ({"type": "load_history", "with_user_id": a.user_id})
        self.assertEqual ([m ["content"] for m in h ["messages"]], [content] * 10, h)

    @atest ()
    async def test_default_burst (self):
        a, b = self.user (), self.user ()
        wa = await self.connect (a)
        cids = ["burst-%d" % i for i in range (25)]
        for cid in cids:
            await wa.send ({"type": "private_message", "to_user_id": b.user_id, "content": cid, "client_id": cid})
        acked, refused = [], []
        got = {}
        try:
            await collect_answers (wa, cids, timeout=10, got=got)
        except AssertionError:
            self.assertEqual (wa.close_code, 1008, wa.buf)
            for f in wa.buf:
                if f ["type"] in ("message_delivered", "message_failed"):
                    got [f ["client_id"]] = f
        for cid, f in got.items ():
            (acked if f ["type"] == "message_delivered" else refused).append (cid)
            if f ["type"] == "message_failed":
                self.assertEqual (f ["error"], "rate_limited", f)
        self.assertGreaterEqual (len (acked), 20, "burst 20: %d acknowledged" % len (acked))
        self.assertLessEqual (len (acked), 24, "burst 20: %d acknowledged" % len (acked))
        self.assertGreaterEqual (len (refused), 1)


class SessionExpiryTests (ServerCase):
    server_env = dict (NO_LOGIN_LIMIT, CHAT_AUTH_SESSION_TTL_S="3")

    def test_cookie_max_age_is_the_ttl (self):
        u = register (self.port)
        r = self.http ("POST", "/api/login", {"nickname": u.nickname, "password": PASSWORD})
        self.assertEqual (r.set_cookie () [1].get ("max-age"), "3", r.headers)

    @atest (timeout=60)
    async def test_expired_session_closes_4001_and_is_refused (self):
        u = self.user ()
        wu = await self.connect (u)
        code = await wu.expect_close (3 + 20)
        self.assertEqual (code, 4001, "expired session's socket")
        self.assert_error (self.http ("GET", "/api/me", cookie=u.cookie), 401, "unauthorized", "expired")
        self.assertEqual (await ws_status (self.port, u.cookie), 401)
        v = self.user ()
        wv = await self.connect (v)
        self.assertNotIn (u.user_id, [e ["user_id"] for e in wv.first ["users"]], "expired user still online")


class PingTests (ServerCase):
    #  A ping goes out at the first once-a-second check that finds the
    #  connection silent for 1 s, and the hang-up comes at the first that
    #  finds it silent for 3 s: two checks later, so a client has about
    #  2 s to answer. With a 2 s timeout it had about 1 s, which a loaded
    #  CI machine running the ASan build did not always give the
    #  well-behaved client.
    server_env = dict (NO_LOGIN_LIMIT, CHAT_WEBSOCKET_PING_INTERVAL_S="1", CHAT_WEBSOCKET_PONG_TIMEOUT_S="3")

    def silent_client (self, cookie):
        """Never answers pings: (saw a ping, seconds until the server closed)."""
        raw = RawWS (self.port, cookie)
        self.assertEqual (raw.status, 101)
        t0 = time.monotonic ()
        pinged = False
        try:
            while time.monotonic () - t0 < 20:
                op, _ = raw.read_frame (20 - (time.monotonic () - t0))
                if op == 0x9:
                    pinged = True
                if op == 0x8:
                    break
        except (EOFError, ConnectionResetError):
            pass
        except TimeoutError:
            return pinged, None
        finally:
            raw.close ()
        return pinged, time.monotonic () - t0

    @atest (timeout=60)
    async def test_ping_and_pong_timeout (self):
        silent, good, watcher = self.user (), self.user (), self.user ()
        ww = await self.connect (watcher)
        wg = await self.connect (good)
        t0 = time.monotonic ()
        pinged, closed_after = await asyncio.to_thread (self.silent_client, silent.cookie)
        self.assertTrue (pinged, "the server never pinged")
        self.assertIsNotNone (closed_after, "a client that never answers pings was not closed in 20 s")
        self.assertLess (closed_after, 1 + 3 + 4, "closed too late")
        await ww.expect ("user_online", user_id=silent.user_id)
        await ww.expect ("user_offline", user_id=silent.user_id)
        #  a client that answers pings stays
        await asyncio.sleep (max (0.0, 1 + 3 + 1 - (time.monotonic () - t0)))  # outlive a pong timeout
        await wg.pm_ok (watcher.user_id, "still connected")


# ---------------------------------------------------------------------------
#   Configuration and process lifecycle (servers of their own)

class ConfigTests (unittest.TestCase):

    def tmpdir (self):
        d = tempfile.mkdtemp (prefix="chatd-e2e-cfg-")
        if not CONFIG ["keep"]:
            self.addCleanup (shutil.rmtree, d, True)
        return d

    def run_chatd (self, args=(), env=None, cwd=None, timeout=15):
        """Start chatd expected to fail; (exit code, output)."""
        e = {k: v for k, v in os.environ.items () if not k.startswith ("CHAT_")}
        e.update (FAST_HASH)
        e.update (env or {})
        d = cwd or self.tmpdir ()
        try:
            r = subprocess.run ([CONFIG ["chatd"]] + list (args), cwd=d, env=e, capture_output=True,
                                timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail ("chatd %s did not exit within %ds" % (" ".join (args), timeout))
        return r.returncode, (r.stdout + r.stderr).decode ("utf-8", "replace")

    def assert_config_error (self, env, section, key, args=()):
        rc, out = self.run_chatd (args, dict (env, CHAT_SERVER_PORT=env.get ("CHAT_SERVER_PORT", str (free_port ()))))
        self.assertNotEqual (rc, 0, "bad configuration accepted: %r\n%s" % (env, out))
        lines = [l for l in out.splitlines () if section in l and key in l]
        self.assertTrue (lines, "no line naming [%s] %s in:\n%s" % (section, key, out))

    def test_bad_values_stop_start_up (self):
        self.assert_config_error ({"CHAT_STORAGE_BACKEND": "oracle"}, "storage", "backend")
        self.assert_config_error ({"CHAT_SERVER_PORT": "not-a-port"}, "server", "port")
        self.assert_config_error ({"CHAT_RATE_LIMIT_BURST": "many"}, "rate_limit", "burst")
        self.assert_config_error ({"CHAT_LIMITS_MAX_MESSAGE_BYTES": "12kb"}, "limits", "max_message_bytes")

    def test_bad_ini_value_names_section_and_key (self):
        d = self.tmpdir ()
        path = os.path.join (d, "bad.ini")
        with open (path, "w") as f:
            f.write ("[server]\nport = %d\n\n[rate_limit]\nmessages_per_second = fast\n" % free_port ())
        rc, out = self.run_chatd (["-c", path], cwd=d)
        self.assertNotEqual (rc, 0, out)
        self.assertTrue ([l for l in out.splitlines () if "rate_limit" in l and "messages_per_second" in l], out)

    def test_one_line_errors_for_bind_port_and_database (self):
        def one_line (env, section, key):
            rc, out = self.run_chatd ([], env)
            self.assertEqual (rc, 1, out)
            #  informational log lines (I:) aside, the error is one line
            lines = [l for l in out.splitlines () if l.strip () and not l.startswith ("I: ")]
            self.assertEqual (len (lines), 1, "expected one line, got:\n%s" % out)
            self.assertIn ("[%s] %s" % (section, key), lines [0])
        one_line ({"CHAT_SERVER_BIND": "localhost", "CHAT_SERVER_PORT": str (free_port ())}, "server", "bind")
        one_line ({"CHAT_SERVER_BIND": "10.255.255.1", "CHAT_SERVER_PORT": str (free_port ())}, "server", "port")
        one_line ({"CHAT_SQLITE_PATH": "/nonexistent/dir/chat.db", "CHAT_SERVER_PORT": str (free_port ())},
                  "sqlite", "path")
        one_line ({"CHAT_WEBSOCKET_PING_INTERVAL_S": "60", "CHAT_WEBSOCKET_PONG_TIMEOUT_S": "30"},
                  "websocket", "pong_timeout_s")
        #  a port already taken
        with socket.socket () as taken:
            taken.bind (("127.0.0.1", 0))
            taken.listen (1)
            one_line ({"CHAT_SERVER_PORT": str (taken.getsockname () [1])}, "server", "port")

    def test_unreadable_config_file (self):
        rc, out = self.run_chatd (["-c", "/nonexistent/chatd.ini"], {"CHAT_SERVER_PORT": str (free_port ())})
        self.assertNotEqual (rc, 0, out)

    def test_unreachable_database_stops_start_up (self):
        rc, out = self.run_chatd ([], {"CHAT_STORAGE_BACKEND": "postgres", "CHAT_SERVER_PORT": str (free_port ()),
                                       "CHAT_POSTGRES_CONNINFO": "host=127.0.0.1 port=1 connect_timeout=2 dbname=x"},
                                  timeout=30)
        self.assertNotEqual (rc, 0, out)

    def test_config_file_and_env_override (self):
        d = self.tmpdir ()
        file_port, env_port = free_port (), free_port ()
        db = os.path.join (d, "from-ini.db")
        path = os.path.join (d, "chatd.ini")
        with open (path, "w") as f:
            f.write ("; e2e\n[server]\nbind = 127.0.0.1\nport = %d\n\n[storage]\nbackend = sqlite\n\n"
                     "[sqlite]\npath = %s\n\n[limits]\nmax_message_bytes = 10\n" % (file_port, db))
        e = {k: v for k, v in os.environ.items () if not k.startswith ("CHAT_")}
        e.update (FAST_HASH)
        for port, extra in ((file_port, {}), (env_port, {"CHAT_SERVER_PORT": str (env_port)})):
            env = dict (e, **extra)
            log = open (os.path.join (d, "log-%d" % port), "wb")
            p = subprocess.Popen ([CONFIG ["chatd"], "-c", path], cwd=d, env=env, stdout=log, stderr=log)
            try:
                deadline = time.monotonic () + 20
                while True:
                    self.assertIsNone (p.poll (), "chatd -c exited %r" % p.returncode)
                    try:
                        if request (port, "GET", "/healthz", timeout=2).status == 200:
                            break
                    except OSError:
                        pass
                    self.assertLess (time.monotonic (), deadline, "chatd -c not listening on %d" % port)
                    time.sleep (0.05)
                self.assertTrue (os.path.exists (db), "sqlite path from the INI file not used")
                if port == env_port:
                    #  the file's other keys still apply (max_message_bytes = 10)
                    async def check ():
                        u = new_user (port)
                        v = register (port)
                        c = await Client.open (port, u.cookie)
                        try:
                            await c.pm_ok (v.user_id, "0123456789")
                            f = await c.pm (v.user_id, "0123456789a")
                            self.assertEqual (f.get ("error"), "invalid_content", f)
                        finally:
                            await c.close ()
                    asyncio.run (check ())
            finally:
                p.send_signal (signal.SIGTERM)
                self.assertEqual (p.wait (20), 0)
                log.close ()

    def test_defaults_without_config_file (self):
        s = socket.socket ()
        try:
            s.setsockopt (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind (("127.0.0.1", 8080))
        except OSError:
            self.skipTest ("port 8080 is in use here")
        finally:
            s.close ()
        d = self.tmpdir ()
        e = {k: v for k, v in os.environ.items () if not k.startswith ("CHAT_")}
        e.update (FAST_HASH)
        log = open (os.path.join (d, "log"), "wb")
        p = subprocess.Popen ([CONFIG ["chatd"]], cwd=d, env=e, stdout=log, stderr=log)
        try:
            deadline = time.monotonic () + 20
            while True:
                self.assertIsNone (p.poll (), "chatd without -c exited %r" % p.returncode)
                try:
                    if request (8080, "GET", "/healthz", timeout=2).status == 200:
                        break
                except OSError:
                    pass
                self.assertLess (time.monotonic (), deadline, "chatd not listening on 127.0.0.1:8080")
                time.sleep (0.05)
            self.assertTrue (os.path.exists (os.path.join (d, "chat.db")), "no chat.db in the working directory")
        finally:
            p.send_signal (signal.SIGTERM)
            self.assertEqual (p.wait (20), 0)
            log.close ()


class LifecycleTests (unittest.TestCase):

    def tearDown (self):
        if getattr (self, "srv", None):
            if test_failed (self):
                print ("\n" + self.srv.log_tail (), file=sys.stderr)
            self.srv.cleanup ()

    def test_sigterm_and_sigint_with_open_connections_exit_0 (self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.srv = srv = Server ("lifecycle-%d" % sig, NO_LOGIN_LIMIT)
            srv.start ()
            a, b = new_user (srv.port), new_user (srv.port)

            async def run ():
                wa = await Client.open (srv.port, a.cookie)
                wb = await Client.open (srv.port, b.cookie)
                acks = [await wa.pm_ok (b.user_id, "before %d" % i) for i in range (5)]
                srv.proc.send_signal (sig)
                await wa.expect_close (10)
                await wb.expect_close (10)
                return acks
            acks = asyncio.run (run ())
            self.assertEqual (srv.proc.wait (20), 0, "exit code on signal %d" % sig)
            srv.start ()
            self.assertEqual (request (srv.port, "GET", "/healthz").status, 200)
            b.cookie = login (srv.port, b.nickname)

            async def check ():
                wb = await Client.open (srv.port, b.cookie)
                try:
                    return await sync_all (wb)
                finally:
                    await wb.close ()
            stored = asyncio.run (check ())
            self.assertEqual ([m ["message_id"] for m in stored], [x ["message_id"] for x in acks])
            self.assertEqual (srv.stop (), 0)
            srv.cleanup ()
            self.srv = None


# ---------------------------------------------------------------------------
#   Durability: SIGKILL mid-stream, restart, nothing acknowledged lost,
#   nothing twice

class DurabilityTests (OwnServerCase):
    server_name = "durability"
    server_env = dict (NO_RATE_LIMIT, **NO_LOGIN_LIMIT)

    def test_kill_rounds (self):
        srv = self.srv
        srv.start ()
        a = register (srv.port)
        b = register (srv.port)
        sent = {}           # client_id -> content
        acked = {}          # client_id -> message_id
        per_round = 500
        kill_after = [5, 40, 150, 300, 100]     # acks seen before the kill, per round

        async def connect ():
            a.cookie = login (srv.port, a.nickname)
            return await Client.open (srv.port, a.cookie, label="a")

        async def verify (c, resend):
            stored = await sync_all (c)
            by_content = {}
            for m in stored:
                by_content.setdefault (m ["content"], []).append (m)
                self.assertEqual (m ["from_user_id"], a.user_id)
            for cid, mid in acked.items ():
                got = by_content.get (sent [cid], [])
                self.assertEqual (len (got), 1, "acknowledged %s (id %d) stored %d times" % (cid, mid, len (got)))
                self.assertEqual (got [0] ["message_id"], mid, "acknowledged %s has another id" % cid)
            for content, ms in by_content.items ():
                self.assertEqual (len (ms), 1, "%r stored %d times" % (content, len (ms)))
                self.assertIn (content, sent.values (), "stored something never sent: %r" % content)
            if resend:
                missing = [cid for cid in sent if cid not in acked]
                if CONFIG ["verbose"]:
                    print ("    durability: %d stored, %d acknowledged, resending %d (%d of them stored unacknowledged)"
                           % (len (stored), len (acked), len (missing),
                              len ([c for c in missing if sent [c] in by_content])))
                for cid in missing:
                    await c.send ({"type": "private_message", "to_user_id": b.user_id,
                                   "content": sent [cid], "client_id": cid})
                got = await collect_answers (c, missing, timeout=60)
                for cid, f in got.items ():
                    self.assertEqual (f ["type"], "message_delivered", f)
                    was = by_content.get (sent [cid])
                    if was:
                        self.assertEqual (f ["message_id"], was [0] ["message_id"],
                                          "resent %s was stored before the crash as %d, now acked as %d"
                                          % (cid, was [0] ["message_id"], f ["message_id"]))
                    acked [cid] = f ["message_id"]
            return stored

        async def round_ (r, how):
            c = await connect ()
            await verify (c, resend=True)
            cids = ["k%d-%d" % (r, i) for i in range (per_round)]
            for cid in cids:
                sent [cid] = "durable %s" % cid
            for cid in cids:
                await c.send ({"type": "private_message", "to_user_id": b.user_id,
                               "content": sent [cid], "client_id": cid})
            n = 0
            while n < kill_after [r]:
                f = await c.expect (where=lambda f: f ["type"] in ("message_delivered", "message_failed"),
                                    timeout=30)
                self.assertEqual (f ["type"], "message_delivered", f)
                acked [f ["client_id"]] = f ["message_id"]
                n += 1
            if how == "kill":
                srv.proc.kill ()
            else:
                srv.proc.send_signal (signal.SIGTERM)
            #  acknowledgements already on the wire are promises too
            await c.expect_close (20)
            for f in c.buf:
                if f.get ("type") == "message_delivered":
                    acked [f ["client_id"]] = f ["message_id"]
            if CONFIG ["verbose"]:
                print ("    durability round %d: %s after %d acks, %d more acks read after it"
                       % (r, how, n, len ([f for f in c.buf if f.get ("type") == "message_delivered"])))
            rc = srv.proc.wait (30)
            if how == "term":
                self.assertEqual (rc, 0, "SIGTERM mid-stream: exit code")
            srv.start ()

        for r, how in enumerate (["kill", "kill", "kill", "kill", "term"]):
            asyncio.run (round_ (r, how))

        async def final ():
            c = await connect ()
            try:
                await verify (c, resend=True)
                stored = await verify (c, resend=False)
            finally:
                await c.close ()
            self.assertEqual (sorted (m ["content"] for m in stored), sorted (sent.values ()))
            self.assertEqual (len (acked), len (sent))
        asyncio.run (final ())
        self.assertEqual (srv.stop (), 0)


# ---------------------------------------------------------------------------
#   PostgreSQL outage under a running chatd

class PgOutageTests (OwnServerCase):
    server_name = "pg-outage"
    server_env = dict (NO_RATE_LIMIT, **NO_LOGIN_LIMIT)
    log_lines = 60

    def setUp (self):
        if CONFIG ["backend"] != "postgres":
            self.skipTest ("postgres backend only")
        if not pg_control_available ():
            self.skipTest ("needs CHAT_TEST_PG_CONNINFO, CHAT_TEST_PG_DATADIR and pg_ctl")
        self.pg = PgControl ()
        self.pg_stopped = False
        super ().setUp ()

    def tearDown (self):
        if self.pg_stopped:
            try:
                self.pg.start ()
            except Exception as e:
                print ("could not restart PostgreSQL: %s" % e, file=sys.stderr)
        super ().tearDown ()

    def healthz (self):
        return request (self.srv.port, "GET", "/healthz", timeout=10)

    def test_storage_outage_and_recovery (self):
        srv = self.srv
        srv.start ()
        a, b = new_user (srv.port), new_user (srv.port)

        async def run ():
            wa = await Client.open (srv.port, a.cookie, label="a")
            wb = await Client.open (srv.port, b.cookie, label="b")
            acked, failed = {}, set ()
            first = await wa.pm_ok (b.user_id, "before the outage", "pg-0")
            acked ["pg-0"] = first ["message_id"]
            self.pg.stop ()
            self.pg_stopped = True
            #  sends during the outage: storage_unavailable, or no answer
            loop = asyncio.get_running_loop ()
            deadline = loop.time () + 30
            degraded = None
            i = 0
            while loop.time () < deadline:
                i += 1
                cid = "pg-out-%d" % i
                await wa.send ({"type": "private_message", "to_user_id": b.user_id, "content": cid,
                                "client_id": cid})
                try:
                    f = await wa.wait_answer (b.user_id, cid, timeout=2)
                    if f ["type"] == "message_failed":
                        self.assertEqual (f ["error"], "storage_unavailable", f)
                        failed.add (cid)
                    else:
                        acked [cid] = f ["message_id"]
                except AssertionError:
                    pass
                r = self.healthz ()
                if r.status == 503:
                    degraded = r
                    if failed:
                        break
            self.assertIsNotNone (degraded, "/healthz never answered 503 while PostgreSQL was down")
            self.assertEqual (degraded.json.get ("status"), "degraded", degraded)
            self.assertTrue (failed, "no storage_unavailable while PostgreSQL was down")
            for cid in list (acked):
                self.assertEqual (cid, "pg-0", "acknowledged %s while the database was down" % cid)
            if CONFIG ["verbose"]:
                print ("    outage: %d sent, %d storage_unavailable, %d unanswered so far"
                       % (i, len (failed), i - len (failed)))
            self.pg.start ()
            self.pg_stopped = False
            t_restart = loop.time ()
            deadline = loop.time () + 60
            while self.healthz ().status != 200:
                self.assertLess (loop.time (), deadline, "/healthz not 200 within 60 s of the restart")
                await asyncio.sleep (0.2)   # polling health, as asked
            self.assertEqual (self.healthz ().json.get ("status"), "ok")
            if CONFIG ["verbose"]:
                print ("    outage: /healthz 200 again %.1f s after the restart" % (loop.time () - t_restart))
            ok = await wa.pm (b.user_id, "after the outage", "pg-after", timeout=20)
            self.assertEqual (ok ["type"], "message_delivered", ok)
            acked ["pg-after"] = ok ["message_id"]
            await wb.expect ("private_message", message_id=ok ["message_id"], timeout=10)
            #  late answers to the messages sent during the outage
            await wa.barrier ()
            for f in wa.buf:
                if f.get ("type") == "message_delivered":
                    acked [f ["client_id"]] = f ["message_id"]
                elif f.get ("type") == "message_failed":
                    self.assertEqual (f ["error"], "storage_unavailable", f)
                    failed.add (f ["client_id"])
            stored = {m ["content"]: m ["message_id"] for m in await sync_all (wb)}
            for cid, mid in acked.items ():
                content = {"pg-0": "before the outage", "pg-after": "after the outage"}.get (cid, cid)
                self.assertEqual (stored.get (content), mid, "acknowledged %s not stored" % cid)
            for cid in failed:
                self.assertNotIn (cid, stored, "%s failed with storage_unavailable but was stored" % cid)
            await wa.close ()
            await wb.close ()
        asyncio.run (run ())
        self.assertEqual (srv.stop (), 0)


# ---------------------------------------------------------------------------

if __name__ == "__main__":
    sys.exit (run_main (sys.modules [__name__]))
