/*  =========================================================================
    rate_limiter.c - the rate-limiter actor: admission for messages, typing
    events and logins

    Owns: a token bucket per user for private messages (with the user's
    streak of refusals in a row) and one for typing events; failed-login
    records per client address and per nickname (lower-cased), each the
    times of its recent failures; logins it is holding back on purpose.
    Everything lives in memory and a periodic sweep drops full buckets and
    expired records, so memory follows the active users.

    Talks to:
        ws-front   receives private_message, typing, login; sends
                   message_failed (rate_limited), close_connection (1008),
                   http_response (429)
        persistence sends the private_message it admits (to be stored;
                   hub routes it once it is)
        hub        sends the typing events it admits
        auth       sends the login it admits (at once or after a delay);
                   receives login_result

    Each wake-up drains what is waiting (up to RL_DRAIN_MAX) with the
    outbox held, so what it admits from a burst goes on as one burst. An
    admitted private_message is forwarded as it came (chat_forward).
    Time is the monotonic clock (zclock_usecs), never the wall clock.
    =========================================================================
*/

#include "chat_msg.h"
#include "chat_actors.h"
#include "chat_config.h"
#include <inttypes.h>
#include <math.h>
#include <sodium.h>

//  Interval of the sweep that forgets full buckets and old failures, ms
#define RL_SWEEP_MS         5000
//  Delay of the first slowed login, doubled per further failure, ms
#define RL_LOGIN_DELAY_MS   250
//  Longest delay of a slowed login, ms
#define RL_LOGIN_DELAY_MAX_MS 5000
//  Longest key kept for an address or a nickname, bytes
#define RL_KEY_MAX          128
//  Most messages handled per wake-up, so that $TERM and the sweep still run
#define RL_DRAIN_MAX        1024

//  A token bucket; for messages also the user's refusals in a row
typedef struct {
    double tokens;                      //  Tokens in the bucket (fractional)
    int64_t updated_us;                 //  When tokens was last brought up to date
    int streak;                         //  Refusals in a row (messages only)
} s_bucket_t;

//  The recent failed logins of one address or one nickname
typedef struct {
    int count;                          //  Entries used in times
    int64_t times [];                   //  Failure times (monotonic ms), oldest first
} s_failures_t;

typedef struct _self_t self_t;

//  A login held back on purpose; owns copies of its fields
typedef struct {
    self_t *self;                       //  The actor, for the timer handler
    void *handle;                       //  Our handle in self->pending
    uint64_t req_id;                    //  ws-front's request id
    char *address;                      //  Client address
    size_t address_len;                 //  Its length
    char *nickname;                     //  Nickname as typed
    size_t nickname_len;                //  Its length
    char *password;                     //  Password (wiped when freed)
    size_t password_len;                //  Its length
} s_pending_t;

struct _self_t {
    zsock_t *pipe;                      //  Our actor pipe
    chat_config_t cfg;                  //  Our copy of the configuration
    zsock_t *inbox;                     //  PULL at inproc://chatd-rate-limiter
    chat_outbox_t *outbox;              //  PUSH to ws-front, persistence, hub and auth
    zloop_t *loop;                      //  Reactor: pipe, inbox, timers
    chat_watch_t pipe_watch;            //  The pipe in loop
    chat_watch_t inbox_watch;           //  The inbox in loop
    chat_msg_t msg;                     //  Last message received on inbox
    zhashx_t *messages;                 //  user_id -> s_bucket_t for private messages
    zhashx_t *typing;                   //  user_id -> s_bucket_t for typing events
    zhashx_t *by_address;               //  address -> s_failures_t
    zhashx_t *by_nickname;              //  lower-cased nickname -> s_failures_t
    int failures_cap;                   //  Failure times kept per record
    int64_t window_ms;                  //  Failures older than this are forgotten
    zlistx_t *pending;                  //  s_pending_t: logins waiting for their timer
    bool terminated;                    //  $TERM received
};


//  --------------------------------------------------------------------------
//  Destructors for the containers

static void
s_free_item (void **item_p)
{
    free (*item_p);
    *item_p = NULL;
}

static void
s_pending_destroy (void **item_p)
{
    s_pending_t *pending = (s_pending_t *) *item_p;
    if (pending) {
        free (pending->address);
        free (pending->nickname);
        if (pending->password)
            sodium_memzero (pending->password, pending->password_len);
        free (pending->password);
        free (pending);
        *item_p = NULL;
    }
}

static zhashx_t *
s_table_new (void)
{
    zhashx_t *table = zhashx_new ();
    assert (table);
    zhashx_set_destructor (table, s_free_item);
    return table;
}


static self_t *
s_self_new (zsock_t *pipe, const chat_config_t *cfg)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    assert (self);
    self->pipe = pipe;
    self->cfg = *cfg;
    chat_msg_init (&self->msg);
    self->inbox = chat_inbox_new (CHAT_ACTOR_RATE_LIMITER);
    self->outbox = chat_outbox_new (CHAT_ACTOR_RATE_LIMITER, self->cfg.server_tap);
    self->messages = s_table_new ();
    self->typing = s_table_new ();
    self->by_address = s_table_new ();
    self->by_nickname = s_table_new ();
    int cap = self->cfg.rate_limit_login_max_failures;
    if (cap < self->cfg.rate_limit_login_slow_after)
        cap = self->cfg.rate_limit_login_slow_after;
    self->failures_cap = cap > 0? cap: 1;
    self->window_ms = (int64_t) (self->cfg.rate_limit_login_window_s > 0?
                                 self->cfg.rate_limit_login_window_s: 1) * 1000;
    self->pending = zlistx_new ();
    assert (self->pending);
    zlistx_set_destructor (self->pending, s_pending_destroy);
    return self;
}


static void
s_self_destroy (self_t **self_p)
{
    assert (self_p);
    self_t *self = *self_p;
    if (self) {
        zloop_destroy (&self->loop);            //  Drops the pending timers
        zlistx_destroy (&self->pending);        //  Then the logins they held
        zhashx_destroy (&self->messages);
        zhashx_destroy (&self->typing);
        zhashx_destroy (&self->by_address);
        zhashx_destroy (&self->by_nickname);
        chat_outbox_destroy (&self->outbox);
        zsock_destroy (&self->inbox);
        chat_msg_release (&self->msg);
        free (self);
        *self_p = NULL;
    }
}


//  --------------------------------------------------------------------------
//  Token buckets

//  Bring the bucket up to now
static void
s_bucket_refill (s_bucket_t *bucket, double rate, int burst, int64_t now_us)
{
    if (now_us > bucket->updated_us) {
        bucket->tokens += (double) (now_us - bucket->updated_us) / 1e6 * rate;
        if (bucket->tokens > burst)
            bucket->tokens = burst;
        bucket->updated_us = now_us;
    }
}

//  Take one token from user's bucket in table, creating it full. Returns
//  the bucket, and sets *admitted; if refused, *wait_ms is the time until
//  one token is there (>= 1). A rate or burst <= 0 turns limiting off.
static s_bucket_t *
s_bucket_take (zhashx_t *table, uint64_t user_id, double rate, int burst,
               bool *admitted, uint64_t *wait_ms)
{
    char key [24];
    snprintf (key, sizeof key, "%" PRIu64, user_id);
    int64_t now = zclock_usecs ();
    s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (table, key);
    if (!bucket) {
        bucket = (s_bucket_t *) zmalloc (sizeof (s_bucket_t));
        assert (bucket);
        bucket->tokens = burst;
        bucket->updated_us = now;
        zhashx_insert (table, key, bucket);
    }
    *admitted = true;
    *wait_ms = 0;
    if (rate <= 0 || burst <= 0)
        return bucket;
    s_bucket_refill (bucket, rate, burst, now);
    //  The epsilon forgives rounding after a client waited retry_after_ms
    if (bucket->tokens >= 1 - 1e-9) {
        bucket->tokens -= 1;
        if (bucket->tokens < 0)
            bucket->tokens = 0;
    }
    else {
        *admitted = false;
        double wait = ceil ((1 - bucket->tokens) / rate * 1000);
        *wait_ms = wait < 1? 1: (uint64_t) wait;
    }
    return bucket;
}

//  Drop the buckets that are full again: a new one would be the same
static void
s_buckets_sweep (zhashx_t *table, double rate, int burst, int64_t now_us)
{
    zlistx_t *keys = zhashx_keys (table);
    for (const char *key = (const char *) zlistx_first (keys); key;
         key = (const char *) zlistx_next (keys)) {
        s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (table, key);
        s_bucket_refill (bucket, rate, burst, now_us);
        if (rate <= 0 || burst <= 0 || bucket->tokens >= burst)
            zhashx_delete (table, key);
    }
    zlistx_destroy (&keys);
}


//  --------------------------------------------------------------------------
//  Failed-login records

//  Forget the failures that left the window
static void
s_failures_expire (self_t *self, s_failures_t *record, int64_t now_ms)
{
    int old = 0;
    while (old < record->count && record->times [old] <= now_ms - self->window_ms)
        old++;
    if (old) {
        memmove (record->times, record->times + old, (size_t) (record->count - old) * sizeof (int64_t));
        record->count -= old;
    }
}

//  Failures of key within the window
static int
s_failures_count (self_t *self, zhashx_t *table, const char *key, int64_t now_ms)
{
    s_failures_t *record = (s_failures_t *) zhashx_lookup (table, key);
    if (!record)
        return 0;
    s_failures_expire (self, record, now_ms);
    return record->count;
}

static void
s_failures_add (self_t *self, zhashx_t *table, const char *key, int64_t now_ms)
{
    s_failures_t *record = (s_failures_t *) zhashx_lookup (table, key);
    if (!record) {
        record = (s_failures_t *) zmalloc (sizeof (s_failures_t)
                                           + (size_t) self->failures_cap * sizeof (int64_t));
        assert (record);
        zhashx_insert (table, key, record);
    }
    s_failures_expire (self, record, now_ms);
    if (record->count == self->failures_cap) {
        //  Full: the oldest no longer matters, the newest do
        memmove (record->times, record->times + 1, (size_t) (record->count - 1) * sizeof (int64_t));
        record->count--;
    }
    record->times [record->count++] = now_ms;
}

static void
s_failures_sweep (self_t *self, zhashx_t *table, int64_t now_ms)
{
    zlistx_t *keys = zhashx_keys (table);
    for (const char *key = (const char *) zlistx_first (keys); key;
         key = (const char *) zlistx_next (keys))
        if (s_failures_count (self, table, key, now_ms) == 0)
            zhashx_delete (table, key);
    zlistx_destroy (&keys);
}

//  The table keys: the address as is, the nickname lower-cased (both
//  truncated to RL_KEY_MAX - 1 bytes; NULs inside are cut off)
static void
s_address_key (char *key, const char *address, size_t len)
{
    snprintf (key, RL_KEY_MAX, "%.*s", (int) (len < RL_KEY_MAX? len: RL_KEY_MAX - 1), address);
}

static void
s_nickname_key (char *key, const char *nickname, size_t len)
{
    s_address_key (key, nickname, len);
    for (char *p = key; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char) (*p - 'A' + 'a');
}


//  --------------------------------------------------------------------------
//  private_message conn_id user_id nickname to_user_id client_id content

static void
s_handle_private_message (self_t *self, chat_msg_t *m)
{
    bool admitted;
    uint64_t wait_ms;
    s_bucket_t *bucket = s_bucket_take (self->messages, m->u [1],
                                        self->cfg.rate_limit_messages_per_second,
                                        self->cfg.rate_limit_burst, &admitted, &wait_ms);
    if (admitted) {
        bucket->streak = 0;
        chat_forward (self->outbox, CHAT_ACTOR_PERSISTENCE, m);
        return;
    }
    const char *text = "too many messages; retry later";
    chat_sendn (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_MESSAGE_FAILED,
                m->u [0], m->s [4], m->len [4], m->u [3],
                "rate_limited", strlen ("rate_limited"), text, strlen (text), wait_ms);
    bucket->streak++;
    if (self->cfg.rate_limit_close_after > 0 && bucket->streak >= self->cfg.rate_limit_close_after) {
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_CLOSE_CONNECTION,
                   m->u [0], (uint64_t) 1008, "rate limit exceeded");
        bucket->streak = 0;
    }
}


//  --------------------------------------------------------------------------
//  typing conn_id user_id nickname to_user_id is_typing

static void
s_handle_typing (self_t *self, chat_msg_t *m)
{
    bool admitted;
    uint64_t wait_ms;
    s_bucket_take (self->typing, m->u [1], self->cfg.rate_limit_typing_per_second,
                   self->cfg.rate_limit_typing_burst, &admitted, &wait_ms);
    if (admitted)
        chat_sendn (self->outbox, CHAT_ACTOR_HUB, CHAT_CMD_TYPING,
                    m->u [0], m->u [1], m->s [2], m->len [2], m->u [3], m->u [4]);
}


//  --------------------------------------------------------------------------
//  login req_id address nickname password

static void
s_pending_send (self_t *self, s_pending_t *pending)
{
    chat_sendn (self->outbox, CHAT_ACTOR_AUTH, CHAT_CMD_LOGIN, pending->req_id,
                pending->address, pending->address_len,
                pending->nickname, pending->nickname_len,
                pending->password, pending->password_len);
}

static char *
s_memdup (const char *data, size_t len)
{
    char *copy = (char *) malloc (len + 1);
    assert (copy);
    memcpy (copy, data, len);
    copy [len] = 0;
    return copy;
}

//  Timer: a held-back login is due
static int
s_on_pending_due (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    s_pending_t *pending = (s_pending_t *) arg;
    self_t *self = pending->self;
    s_pending_send (self, pending);
    zlistx_delete (self->pending, pending->handle);
    return 0;
}

static void
s_handle_login (self_t *self, chat_msg_t *m)
{
    char address [RL_KEY_MAX];
    char nickname [RL_KEY_MAX];
    s_address_key (address, m->s [1], m->len [1]);
    s_nickname_key (nickname, m->s [2], m->len [2]);
    int64_t now = zclock_mono ();
    int failures = s_failures_count (self, self->by_address, address, now);
    int by_nickname = s_failures_count (self, self->by_nickname, nickname, now);
    if (by_nickname > failures)
        failures = by_nickname;

    int max_failures = self->cfg.rate_limit_login_max_failures;
    int slow_after = self->cfg.rate_limit_login_slow_after;
    if (max_failures > 0 && failures >= max_failures) {
        zsys_info ("rate-limiter: login refused after %d failures (address or nickname)", failures);
        chat_send (self->outbox, CHAT_ACTOR_WS_FRONT, CHAT_CMD_HTTP_RESPONSE, m->u [0], (uint64_t) 429,
                   "{\"error\":\"rate_limited\",\"message\":\"too many failed logins; try again later\"}", "");
        return;
    }
    s_pending_t *pending = (s_pending_t *) zmalloc (sizeof (s_pending_t));
    assert (pending);
    pending->self = self;
    pending->req_id = m->u [0];
    pending->address = s_memdup (m->s [1], m->len [1]);
    pending->address_len = m->len [1];
    pending->nickname = s_memdup (m->s [2], m->len [2]);
    pending->nickname_len = m->len [2];
    pending->password = s_memdup (m->s [3], m->len [3]);
    pending->password_len = m->len [3];

    if (slow_after > 0 && failures >= slow_after) {
        int doublings = failures - slow_after;
        int64_t delay = RL_LOGIN_DELAY_MS;
        while (doublings-- > 0 && delay < RL_LOGIN_DELAY_MAX_MS)
            delay *= 2;
        if (delay > RL_LOGIN_DELAY_MAX_MS)
            delay = RL_LOGIN_DELAY_MAX_MS;
        pending->handle = zlistx_add_end (self->pending, pending);
        zloop_timer (self->loop, (size_t) delay, 1, s_on_pending_due, pending);
    }
    else {
        s_pending_send (self, pending);
        s_pending_destroy ((void **) &pending);
    }
}


//  --------------------------------------------------------------------------
//  login_result address nickname ok

static void
s_handle_login_result (self_t *self, chat_msg_t *m)
{
    char address [RL_KEY_MAX];
    char nickname [RL_KEY_MAX];
    s_address_key (address, m->s [0], m->len [0]);
    s_nickname_key (nickname, m->s [1], m->len [1]);
    if (m->u [2])
        zhashx_delete (self->by_nickname, nickname);
    else {
        int64_t now = zclock_mono ();
        s_failures_add (self, self->by_address, address, now);
        s_failures_add (self, self->by_nickname, nickname, now);
    }
}


//  --------------------------------------------------------------------------
//  Reactor handlers

//  Handle what is waiting, up to RL_DRAIN_MAX messages, with the outbox
//  held: the messages admitted from one burst go on to persistence as one
//  burst, and it wakes once for them
static void
s_handle (void *arg, chat_msg_t *m)
{
    self_t *self = (self_t *) arg;
    switch (m->cmd) {
        case CHAT_CMD_PRIVATE_MESSAGE: s_handle_private_message (self, m); break;
        case CHAT_CMD_TYPING:          s_handle_typing (self, m);          break;
        case CHAT_CMD_LOGIN:           s_handle_login (self, m);           break;
        case CHAT_CMD_LOGIN_RESULT:    s_handle_login_result (self, m);    break;
        default:
            zsys_warning ("rate-limiter: unexpected %s", chat_cmd_name (m->cmd));
    }
}

//  The inbox may hold messages (chat_zloop_watch)
static int
s_on_inbox (void *arg)
{
    self_t *self = (self_t *) arg;
    return chat_inbox_drain (self->inbox, &self->msg, self->outbox, RL_DRAIN_MAX, s_handle, self);
}

//  The pipe may hold commands: only $TERM is expected
static int
s_on_pipe (void *arg)
{
    self_t *self = (self_t *) arg;
    if (chat_pipe_drain (self->pipe, NULL, NULL) == -1)
        self->terminated = true;
    return self->terminated? -1: 0;
}

static int
s_on_sweep (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop; (void) timer_id;
    self_t *self = (self_t *) arg;
    int64_t now_us = zclock_usecs ();
    s_buckets_sweep (self->messages, self->cfg.rate_limit_messages_per_second,
                     self->cfg.rate_limit_burst, now_us);
    s_buckets_sweep (self->typing, self->cfg.rate_limit_typing_per_second,
                     self->cfg.rate_limit_typing_burst, now_us);
    int64_t now_ms = zclock_mono ();
    s_failures_sweep (self, self->by_address, now_ms);
    s_failures_sweep (self, self->by_nickname, now_ms);
    return 0;
}


//  --------------------------------------------------------------------------
//  The actor

void
chat_rate_limiter_actor (zsock_t *pipe, void *config)
{
    assert (config);
    chat_actor_thread_name (CHAT_ACTOR_RATE_LIMITER);
    self_t *self = s_self_new (pipe, (const chat_config_t *) config);
    zsock_signal (pipe, 0);
    if (!self->inbox) {
        chat_actor_report (pipe, "rate-limiter: cannot bind its inbox");
        s_self_destroy (&self);
        return;
    }
    self->loop = zloop_new ();
    assert (self->loop);
    zloop_set_nonstop (self->loop, true);   //  chatd.c decides when we stop
    if (chat_zloop_watch (self->loop, pipe, &self->pipe_watch, s_on_pipe, self) != 0
    ||  chat_zloop_watch (self->loop, self->inbox, &self->inbox_watch, s_on_inbox, self) != 0) {
        chat_actor_report (pipe, "rate-limiter: cannot watch its sockets");
        s_self_destroy (&self);
        return;
    }
    zloop_timer (self->loop, RL_SWEEP_MS, 0, s_on_sweep, self);
    chat_actor_report (pipe, NULL);
    //  A signal interrupts the poll (returns 0, EINTR): carry on until $TERM
    while (zloop_start (self->loop) == 0 && !self->terminated && zmq_errno () == EINTR)
        ;
    s_self_destroy (&self);
}
