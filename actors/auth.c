/*  =========================================================================
    auth.c - the auth actor: users, passwords and sessions

    Owns: user registration (nickname rules, Argon2id password hashes),
    password checks at login, sessions (a random token handed out in the
    cookie; only the hex BLAKE2b-256 hash of the token is ever stored) and
    their expiry. It has its own storage backend handle.

    Talks to:
        ws-front       receives register, logout; sends http_response,
                       session_created (at start-up for every live session and
                       before each login's response), session_revoked
                       (logout and expiry)
        rate-limiter   receives login (already admitted); sends login_result

    Password hashing is deliberately slow and runs on this actor's thread:
    it delays only other auth requests, never ws-front.
    =========================================================================
*/

#include "chat_msg.h"
#include "chat_actors.h"
#include "chat_backend.h"
#include "chat_config.h"
#include "chat_wire.h"
#include <jansson.h>
#include <sodium.h>

//  Random bytes in a session token (the cookie carries their base64url)
#define AUTH_TOKEN_BYTES    32
//  Longest interval between expiry sweeps, in ms
#define AUTH_SWEEP_MAX_MS   60000

#define AUTH_COOKIE_ATTRS   "HttpOnly; SameSite=Lax; Path=/"

typedef struct {
    zsock_t *pipe;                      //  Our actor pipe
    chat_config_t cfg;                  //  Our copy of the configuration
    const chat_backend_ops_t *ops;      //  Storage backend functions
    chat_backend_t *db;                 //  Our own backend handle
    zsock_t *inbox;                     //  PULL at inproc://chatd-auth
    chat_outbox_t *outbox;              //  PUSH to ws-front and rate-limiter
    zloop_t *loop;                      //  Reactor: pipe, inbox, expiry timer
    chat_msg_t msg;                     //  Last message received on inbox
    unsigned long long opslimit;        //  Argon2id passes
    size_t memlimit;                    //  Argon2id memory in bytes
    char dummy_hash [crypto_pwhash_STRBYTES];   //  Verified against for unknown users
    char error [256];                   //  Why s_self_new failed, if it did
} self_t;


//  --------------------------------------------------------------------------
//  Hash a password with the configured Argon2id parameters. Returns 0 or -1.

static int
s_hash_password (self_t *self, char *out, const char *password, size_t len)
{
    return crypto_pwhash_str_alg (out, password, len, self->opslimit, self->memlimit,
                                  crypto_pwhash_ALG_ARGON2ID13);
}


//  --------------------------------------------------------------------------
//  Create the actor's state. On failure self->error says why; the caller
//  reports it and destroys self.

static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->pipe = pipe;
    self->cfg = *cfg;
    chat_msg_init (&self->msg);
    self->opslimit = (unsigned long long) (cfg->auth_password_opslimit > 0? cfg->auth_password_opslimit: 1);
    self->memlimit = (size_t) (cfg->auth_password_memlimit_kib > 0? cfg->auth_password_memlimit_kib: 8192) * 1024;

    if (sodium_init () < 0) {
        snprintf (self->error, sizeof self->error, "auth: cannot initialise libsodium");
        return self;
    }
    self->ops = chat_backend_find (self->cfg.storage_backend);
    if (!self->ops) {
        snprintf (self->error, sizeof self->error,
                  "[storage] backend: unknown backend '%s'", self->cfg.storage_backend);
        return self;
    }
    char reason [200] = "";
    self->db = self->ops->open (&self->cfg, reason, sizeof reason);
    if (!self->db) {
        snprintf (self->error, sizeof self->error, "%s", *reason? reason: "auth: cannot open storage");
        return self;
    }
    self->inbox = chat_inbox_new (CHAT_ACTOR_AUTH);
    if (!self->inbox) {
        snprintf (self->error, sizeof self->error, "auth: cannot bind its inbox");
        return self;
    }
    self->outbox = chat_outbox_new (CHAT_ACTOR_AUTH, self->cfg.server_tap);

    //  A hash of a random password, so that a login for an unknown
    //  nickname costs the same as one with a wrong password
    unsigned char random_password [16];
    randombytes_buf (random_password, sizeof random_password);
    if (s_hash_password (self, self->dummy_hash, (const char *) random_password,
                         sizeof random_password) != 0)
        snprintf (self->error, sizeof self->error,
                  "[auth] password_memlimit_kib: cannot hash a password with these Argon2id parameters");
    return self;
}


static void
s_self_destroy (self_t **self_p)
{
    assert (self_p);
    self_t *self = *self_p;
    if (self) {
        zloop_destroy (&self->loop);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        if (self->db)
            self->ops->close (&self->db);
        chat_msg_release (&self->msg);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Replies to ws-front

//  Send http_response; body is taken over (NULL: empty body)
static void
s_respond (self_t *self, uint64_t req_id, int status, json_t *body, const char *set_cookie)
{
    char *text = body? json_dumps (body, JSON_COMPACT): NULL;
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE,
               req_id, (uint64_t) status, text? text: "", set_cookie? set_cookie: "");
    free (text);
    json_decref (body);
}

static void
s_respond_error (self_t *self, uint64_t req_id, int status, const char *code, const char *message)
{
    s_respond (self, req_id, status,
               json_pack ("{s:s,s:s}", "error", code, "message", message), NULL);
}

static void
s_respond_unavailable (self_t *self, uint64_t req_id)
{
    s_respond_error (self, req_id, 503, "storage_unavailable",
                     "the database cannot be reached; try again later");
}

//  session_created for one session (sessions_live callback, and login)
static void
s_announce_session (const char *token_hash, int64_t user_id, const char *nickname,
                    int64_t expires_ms, void *ctx)
{
    self_t *self = (self_t *) ctx;
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_SESSION_CREATED,
               token_hash, (uint64_t) user_id, nickname, (uint64_t) expires_ms);
}

//  session_revoked "expired" (sessions_expire callback)
static void
s_revoke_expired (const char *token_hash, int64_t user_id, const char *nickname,
                  int64_t expires_ms, void *ctx)
{
    (void) user_id; (void) nickname; (void) expires_ms;
    self_t *self = (self_t *) ctx;
    chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_SESSION_REVOKED,
               token_hash, "expired");
}


//  --------------------------------------------------------------------------
//  register req_id nickname password

static void
s_handle_register (self_t *self, chat_msg_t *m)
{
    uint64_t req_id = m->u [0];
    const char *nickname = m->s [1];
    const char *password = m->s [2];
    size_t password_len = m->len [2];

    if (strlen (nickname) != m->len [1] || !chat_nickname_valid (nickname)) {
        s_respond_error (self, req_id, 400, "invalid_nickname",
                         "a nickname is 3 to 32 characters of A-Z a-z 0-9 _ . -");
        return;
    }
    if (!chat_password_valid (password, password_len)) {
        s_respond_error (self, req_id, 400, "invalid_password",
                         "a password is 8 to 256 bytes");
        return;
    }
    char hash [crypto_pwhash_STRBYTES];
    if (s_hash_password (self, hash, password, password_len) != 0) {
        zsys_error ("auth: cannot hash a password (out of memory?)");
        s_respond_error (self, req_id, 500, "internal_error", "cannot hash the password");
        return;
    }
    int64_t user_id = 0;
    int rc = self->ops->user_create (self->db, nickname, hash, chat_now_ms (), &user_id);
    if (rc == CHAT_DB_OK)
        s_respond (self, req_id, 201,
                   json_pack ("{s:I,s:s}", "user_id", (json_int_t) user_id, "nickname", nickname),
                   NULL);
    else
    if (rc == CHAT_DB_CONFLICT)
        s_respond_error (self, req_id, 409, "nickname_taken", "this nickname is already taken");
    else {
        zsys_warning ("auth: register: storage unavailable");
        s_respond_unavailable (self, req_id);
    }
}


//  --------------------------------------------------------------------------
//  login req_id address nickname password

static void
s_handle_login (self_t *self, chat_msg_t *m)
{
    uint64_t req_id = m->u [0];
    const char *address = m->s [1];
    const char *nickname = m->s [2];
    const char *password = m->s [3];
    size_t password_len = m->len [3];

    chat_user_t user;
    memset (&user, 0, sizeof user);
    int rc = CHAT_DB_NOT_FOUND;
    if (strlen (nickname) == m->len [2] && chat_nickname_valid (nickname))
        rc = self->ops->user_find (self->db, nickname, &user);
    if (rc == CHAT_DB_UNAVAILABLE) {
        zsys_warning ("auth: login: storage unavailable");
        s_respond_unavailable (self, req_id);
        return;
    }
    //  Unknown nickname: verify against the dummy hash all the same, so both
    //  failures take the same time
    bool ok;
    if (rc == CHAT_DB_OK)
        ok = crypto_pwhash_str_verify (user.password_hash, password, password_len) == 0;
    else {
        if (crypto_pwhash_str_verify (self->dummy_hash, password, password_len) == 0)
            zsys_warning ("auth: a password matched the dummy hash");
        ok = false;
    }
    //  rate-limiter hears the result before the client can try again
    if (!ok) {
        chat_send (self->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_LOGIN_RESULT,
                   address, nickname, (uint64_t) 0);
        s_respond_error (self, req_id, 401, "invalid_credentials", "wrong nickname or password");
        return;
    }
    //  The token goes only into the cookie; we keep its hash
    unsigned char token_bin [AUTH_TOKEN_BYTES];
    char token [sodium_base64_ENCODED_LEN (AUTH_TOKEN_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    unsigned char digest [32];
    char token_hash [2 * sizeof digest + 1];
    randombytes_buf (token_bin, sizeof token_bin);
    sodium_bin2base64 (token, sizeof token, token_bin, sizeof token_bin,
                       sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    crypto_generichash (digest, sizeof digest, (const unsigned char *) token, strlen (token), NULL, 0);
    sodium_bin2hex (token_hash, sizeof token_hash, digest, sizeof digest);

    int64_t now = chat_now_ms ();
    int64_t expires = now + (int64_t) self->cfg.auth_session_ttl_s * 1000;
    rc = self->ops->session_create (self->db, token_hash, user.id, now, expires);
    if (rc != CHAT_DB_OK) {
        zsys_warning ("auth: login: cannot store the session");
        s_respond_unavailable (self, req_id);
    }
    else {
        //  ws-front learns the session before the client can use it
        chat_send (self->outbox, CHAT_ACTOR_RATE_LIMITER, CHAT_CMD_LOGIN_RESULT,
                   address, nickname, (uint64_t) 1);
        s_announce_session (token_hash, user.id, user.nickname, expires, self);
        char cookie [256];
        snprintf (cookie, sizeof cookie, "session=%s; " AUTH_COOKIE_ATTRS "; Max-Age=%d",
                  token, self->cfg.auth_session_ttl_s);
        s_respond (self, req_id, 200,
                   json_pack ("{s:I,s:s}", "user_id", (json_int_t) user.id, "nickname", user.nickname),
                   cookie);
        sodium_memzero (cookie, sizeof cookie);
    }
    sodium_memzero (token_bin, sizeof token_bin);
    sodium_memzero (token, sizeof token);
}


//  --------------------------------------------------------------------------
//  logout req_id token_hash

static void
s_handle_logout (self_t *self, chat_msg_t *m)
{
    uint64_t req_id = m->u [0];
    const char *token_hash = m->s [1];

    int rc = CHAT_DB_NOT_FOUND;
    if (*token_hash && strlen (token_hash) == m->len [1])
        rc = self->ops->session_delete (self->db, token_hash);
    if (rc == CHAT_DB_OK) {
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_SESSION_REVOKED,
                   token_hash, "logout");
        s_respond (self, req_id, 204, NULL, "session=; " AUTH_COOKIE_ATTRS "; Max-Age=0");
    }
    else
    if (rc == CHAT_DB_NOT_FOUND)
        s_respond_error (self, req_id, 401, "unauthorized", "not logged in");
    else {
        zsys_warning ("auth: logout: storage unavailable");
        s_respond_unavailable (self, req_id);
    }
}


//  --------------------------------------------------------------------------
//  Reactor handlers

static int
s_on_inbox (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    self_t *self = (self_t *) arg;
    if (chat_msg_recv (reader, &self->msg, true) != 0)
        return 0;                       //  Nothing, or malformed (logged)
    switch (self->msg.cmd) {
        case CHAT_CMD_REGISTER: s_handle_register (self, &self->msg); break;
        case CHAT_CMD_LOGIN:    s_handle_login (self, &self->msg);    break;
        case CHAT_CMD_LOGOUT:   s_handle_logout (self, &self->msg);   break;
        default:
            zsys_warning ("auth: unexpected %s", chat_cmd_name (self->msg.cmd));
    }
    return 0;
}

static int
s_on_pipe (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop; (void) arg;
    zmsg_t *request = zmsg_recv (reader);
    if (!request)
        return -1;                      //  Interrupted
    char *command = zmsg_popstr (request);
    bool terminate = !command || streq (command, "$TERM");
    if (!terminate)
        zsys_warning ("auth: unknown pipe command '%s'", command);
    zstr_free (&command);
    zmsg_destroy (&request);
    return terminate? -1: 0;
}

static int
s_on_sweep (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    self_t *self = (self_t *) arg;
    if (self->ops->sessions_expire (self->db, chat_now_ms (), s_revoke_expired, self) == CHAT_DB_UNAVAILABLE)
        zsys_warning ("auth: cannot expire sessions: storage unavailable");
    return 0;
}


//  --------------------------------------------------------------------------
//  The actor

void
chat_auth_actor (zsock_t *pipe, void *config)
{
    assert (config);
    chat_actor_thread_name (CHAT_ACTOR_AUTH);
    self_t *self = s_self_new (pipe, (const chat_config_t *) config);
    zsock_signal (pipe, 0);
    if (!*self->error
    &&  self->ops->sessions_live (self->db, chat_now_ms (), s_announce_session, self) != CHAT_DB_OK)
        snprintf (self->error, sizeof self->error, "auth: cannot load the live sessions from storage");
    if (*self->error) {
        chat_actor_report (pipe, self->error);  //  chatd prints it, once
        s_self_destroy (&self);
        return;
    }
    int64_t ttl_ms = self->cfg.auth_session_ttl_s > 0? (int64_t) self->cfg.auth_session_ttl_s * 1000: AUTH_SWEEP_MAX_MS;
    self->loop = zloop_new ();
    assert (self->loop);
    zloop_set_nonstop (self->loop, true);   //  chatd.c decides when we stop
    zloop_reader (self->loop, pipe, s_on_pipe, self);
    zloop_reader (self->loop, self->inbox, s_on_inbox, self);
    zloop_timer (self->loop, (size_t) (ttl_ms < AUTH_SWEEP_MAX_MS? ttl_ms: AUTH_SWEEP_MAX_MS), 0,
                 s_on_sweep, self);
    chat_actor_report (pipe, NULL);
    //  A signal interrupts the poll (returns 0, EINTR): carry on until $TERM
    while (zloop_start (self->loop) == 0 && zmq_errno () == EINTR)
        ;
    s_self_destroy (&self);
}
