/*  =========================================================================
    chat_bench.c - chat-bench, a load generator and meter for chatd

    Owns: N simulated users, each with one WebSocket to chatd, and a few
    HTTP/1.1 keep-alive connections used to register and log them in.
    Talks to: one chatd over TCP (HTTP + RFC 6455 WebSocket), and reads
    /proc/PID of the server to meter its CPU time and resident memory.

    One thread, one epoll loop, non-blocking sockets; no thread per
    connection. The WebSocket client is minimal but correct: handshake with
    Sec-WebSocket-Key (the Accept header is checked), masked text frames
    out, unmasked frames in, partial reads and fragmented messages handled,
    pings answered with pongs, close frames answered.

    Scenarios:
      messaging (default)  user i sends to user (i+1) % N, closed loop
                           (--window W in flight per user) or open loop
                           (--rate R msgs/s in total, spread evenly);
                           latency send -> message_delivered (ack) and
                           send -> recipient's private_message (delivery)
      --connect-only       hold N authenticated idle connections
      --history            load_history page latency (closed loop)

    The hot receive path parses no JSON: it finds "type", "client_id",
    "content" with memmem. The send time travels inside the message: the
    client_id is "b<ns>-<seq>" and the content starts with the send time in
    ns (20 digits), both CLOCK_MONOTONIC of this process.
    =========================================================================
*/

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#define RX_INIT          8192           //  Receive buffer of a WebSocket
#define TX_INIT          4096           //  Send buffer of a WebSocket
#define RX_MAX           (64 * 1024 * 1024)  //  Largest frame we keep whole
#define HTTP_RX          16384          //  HTTP response buffer
#define HIST_SIZE        3776           //  Log buckets, 64 per power of two
#define MAX_ERR_KINDS    48             //  Distinct error names counted
#define MAX_EVENTS       1024           //  epoll_wait batch
#define OPEN_LOOP_TICK   200000         //  ns: open loop wakes at most this often
#define PASSWORD         "bench-password-1"
#define WS_GUID          "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef enum { K_HTTP = 1, K_WS, K_TIMER } kind_t;
typedef enum { WS_IDLE, WS_CONNECTING, WS_HANDSHAKE, WS_OPEN, WS_CLOSED } ws_state_t;
typedef enum { HS_NONE, HS_CONNECTING, HS_SENT } http_state_t;
typedef enum { PH_SETUP, PH_SETTLE, PH_FILL, PH_FILL_DRAIN, PH_RUN, PH_DRAIN, PH_DONE } phase_t;
typedef enum { MODE_MESSAGES, MODE_CONNECT, MODE_HISTORY } mode_t_;

//  A latency histogram: log buckets with 64 sub-buckets per power of two
//  (under 1.6% error), values in ns
typedef struct {
    uint64_t counts [HIST_SIZE];        //  Samples per bucket
    uint64_t total;                     //  Samples recorded
    uint64_t max;                       //  Largest sample, exact
    double sum;                         //  For the mean
} histo_t;

//  A user and its WebSocket
typedef struct {
    kind_t kind;                        //  K_WS (first: epoll data points here)
    int fd;                             //  Socket, -1 when none
    int index;                          //  Local user index 0..N-1
    ws_state_t state;                   //  Connection state
    char nickname [40];                 //  PREFIX<offset + index>
    int64_t user_id;                    //  From login, 0 until logged in
    char cookie [160];                  //  Session cookie value
    int64_t peer_uid;                   //  Whom this user sends to
    char *rx;                           //  Received bytes not yet consumed
    size_t rx_len;                      //  Bytes in rx
    size_t rx_cap;                      //  Size of rx
    char *tx;                           //  Bytes to send
    size_t tx_off;                      //  Bytes of tx already written
    size_t tx_len;                      //  Bytes in tx
    size_t tx_cap;                      //  Size of tx
    bool want_out;                      //  EPOLLOUT is armed
    bool dirty;                         //  On the flush list
    bool got_first;                     //  online_users arrived
    bool closing;                       //  Close frame seen or sent
    bool active;                        //  Takes part in the run
    uint64_t skip_left;                 //  Payload bytes to discard (frame not kept)
    char *frag;                         //  Reassembled fragmented message
    size_t frag_len;                    //  Bytes in frag
    size_t frag_cap;                    //  Size of frag
    bool frag_active;                   //  Inside a fragmented message
    bool frag_skip;                     //  ... whose contents we discard
    char ws_key [32];                   //  Sec-WebSocket-Key we sent
    int64_t inflight;                   //  Messages/requests not answered yet
    uint64_t seq;                       //  Next client_id sequence number
    int64_t before_id;                  //  History paging: next before_id, 0 = newest
} conn_t;

//  One HTTP/1.1 keep-alive client that registers and logs users in
typedef struct {
    kind_t kind;                        //  K_HTTP (first: epoll data points here)
    int fd;                             //  Socket, -1 when none
    http_state_t state;                 //  Connection state
    int user;                           //  User index served, -1 none
    int step;                           //  0 register, 1 login
    int retries;                        //  Resends of the current request
    int64_t deadline;                   //  Request timeout (ns)
    char req [1024];                    //  Current request
    size_t req_len;                     //  Bytes in req
    size_t req_off;                     //  Bytes of req written
    char rx [HTTP_RX];                  //  Response bytes
    size_t rx_len;                      //  Bytes in rx
} http_agent_t;

//  A counted error name
typedef struct {
    char name [48];                     //  e.g. "failed_rate_limited"
    uint64_t count;                     //  Occurrences
} err_kind_t;

//  Server CPU/memory sample from /proc
typedef struct {
    bool ok;                            //  Sample was read
    double cpu_s;                       //  utime + stime
    long rss_kb;                        //  VmRSS
} proc_sample_t;

//  Command-line options
typedef struct {
    char host [256];                    //  Server host
    int port;                           //  Server port
    int users;                          //  N
    int offset;                         //  First user number
    char prefix [24];                   //  Nickname prefix
    double rate;                        //  Total msgs/s, 0 = closed loop
    int window;                         //  In flight per user (closed loop)
    double duration;                    //  Measurement window, s
    double warmup;                      //  Before the window, s
    double drain;                       //  Longest wait for stragglers, s
    int content_bytes;                  //  Size of each message's content
    mode_t_ mode;                       //  Scenario
    int server_pid;                     //  0 = not metered
    bool json;                          //  One JSON line
    bool progress;                      //  A line per second on stderr
    long history_fill;                  //  Messages to store before --history
    int history_limit;                  //  load_history limit
    int http_parallel;                  //  Concurrent HTTP clients
    int connect_parallel;               //  Concurrent WebSocket handshakes
    int conns_per_ip;                   //  Sockets per 127.0.0.x source address
    double setup_timeout;               //  Longest login+connect phase, s
} options_t;

//  The whole benchmark (the tool's self)
typedef struct {
    options_t opt;                      //  What to do
    int epfd;                           //  The epoll instance
    int timerfd;                        //  Open-loop send timer
    kind_t timer_kind;                  //  epoll data for timerfd
    struct sockaddr_in server;          //  Server address
    bool spread_source;                 //  Bind sources over 127.0.0.x
    conn_t *conns;                      //  N users
    http_agent_t *agents;               //  HTTP clients
    conn_t **dirty;                     //  Connections with bytes to flush
    int dirty_count;                    //  Entries in dirty
    int *ready;                         //  Logged-in users waiting to connect
    int ready_head;                     //  Next to connect
    int ready_tail;                     //  Next free slot
    int *active;                        //  Ring of connected users
    int active_count;                   //  Entries in active
    char *scratch;                      //  Payload assembly buffer
    size_t scratch_cap;                 //  Size of scratch
    char pad [70000];                   //  'x' padding for content
    uint64_t rng;                       //  xorshift state for masks
    phase_t phase;                      //  Where we are
    bool sending;                       //  New messages may be sent
    bool in_window;                     //  Inside the measurement window
    int64_t t_begin;                    //  Start of the program (ns)
    int64_t t_phase;                    //  Start of the current phase
    int64_t t_run;                      //  Start of the run (warm-up)
    int64_t t_win_start;                //  Window start
    int64_t t_win_end;                  //  Window end
    int64_t t_drain_end;                //  Drain deadline
    int64_t t_next_progress;            //  Next progress line
    uint64_t sched_k;                   //  Open loop: messages scheduled so far
    double period_ns;                   //  Open loop: ns between messages
    //  Counters over the whole run
    int login_next;                     //  Next user to log in
    int logged_in;                      //  Users with a session
    int login_failed;                   //  Users that could not log in
    int connect_pending;                //  Handshakes in progress
    int connected;                      //  WebSockets open now
    int connected_ever;                 //  WebSockets that opened
    int connect_failed;                 //  Handshakes that failed
    uint64_t sent;                      //  Messages (or requests) sent
    uint64_t acked;                     //  message_delivered (or history_loaded)
    uint64_t failed;                    //  message_failed
    uint64_t delivered;                 //  private_message received
    uint64_t closes;                    //  Unexpected closes
    uint64_t presence;                  //  Presence frames seen
    uint64_t history_msgs;              //  Messages in history pages
    uint64_t filled;                    //  Messages stored by --history-fill
    double fill_s;                      //  Time the fill took
    //  Counters inside the window
    uint64_t w_sent;
    uint64_t w_acked;
    uint64_t w_delivered;
    uint64_t w_failed;
    histo_t h_ack;                      //  Send -> ack (or page) latency
    histo_t h_deliver;                  //  Send -> delivery latency
    histo_t h_lag;                      //  Open loop: scheduled -> actually sent
    err_kind_t errs [MAX_ERR_KINDS];    //  Errors by name
    int err_kinds;                      //  Entries in errs
    uint64_t errors;                    //  All errors
    proc_sample_t srv_base;             //  Before connecting
    proc_sample_t srv_start;            //  Window start
    proc_sample_t srv_end;              //  Window end
    double own_cpu_start;               //  Our CPU at window start
    double own_cpu_end;                 //  Our CPU at window end
    int64_t lost;                       //  In flight after the drain
} bench_t;


//  --------------------------------------------------------------------------
//  Small helpers

static int64_t
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double
s_own_cpu (void)
{
    struct rusage ru;
    getrusage (RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
         + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static uint64_t
s_rand (bench_t *self)
{
    uint64_t x = self->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    self->rng = x;
    return x;
}

static void
s_error (bench_t *self, const char *name, size_t len)
{
    self->errors++;
    if (len > 47)
        len = 47;
    for (int i = 0; i < self->err_kinds; i++)
        if (strlen (self->errs [i].name) == len
        &&  memcmp (self->errs [i].name, name, len) == 0) {
            self->errs [i].count++;
            return;
        }
    if (self->err_kinds < MAX_ERR_KINDS) {
        err_kind_t *e = &self->errs [self->err_kinds++];
        memcpy (e->name, name, len);
        e->name [len] = 0;
        e->count = 1;
    }
}

static void
s_errorf (bench_t *self, const char *fmt, const char *arg, size_t arglen)
{
    char name [64];
    int n = snprintf (name, sizeof name, fmt, (int) arglen, arg);
    s_error (self, name, n < 0? 0: (size_t) n < sizeof name? (size_t) n: sizeof name - 1);
}

static void
s_read_proc (int pid, proc_sample_t *sample)
{
    memset (sample, 0, sizeof *sample);
    if (pid <= 0)
        return;
    char path [64], buf [4096];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen (path, "r");
    if (!f)
        return;
    size_t n = fread (buf, 1, sizeof buf - 1, f);
    fclose (f);
    buf [n] = 0;
    char *p = strrchr (buf, ')');
    if (!p)
        return;
    //  After ')' come fields 3.. ; utime is field 14, stime 15
    unsigned long long utime = 0, stime = 0;
    int field = 2;
    char *save = NULL;
    for (char *tok = strtok_r (p + 1, " ", &save); tok; tok = strtok_r (NULL, " ", &save)) {
        field++;
        if (field == 14)
            utime = strtoull (tok, NULL, 10);
        else
        if (field == 15) {
            stime = strtoull (tok, NULL, 10);
            break;
        }
    }
    sample->cpu_s = (double) (utime + stime) / sysconf (_SC_CLK_TCK);
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    f = fopen (path, "r");
    if (!f)
        return;
    char line [256];
    while (fgets (line, sizeof line, f))
        if (strncmp (line, "VmRSS:", 6) == 0)
            sample->rss_kb = strtol (line + 6, NULL, 10);
    fclose (f);
    sample->ok = true;
}


//  --------------------------------------------------------------------------
//  Histogram

static int
s_hist_index (uint64_t v)
{
    if (v < 128)
        return (int) v;
    int msb = 63 - __builtin_clzll (v);
    int shift = msb - 6;
    return 64 * shift + (int) (v >> shift);
}

static uint64_t
s_hist_value (int index)
{
    if (index < 128)
        return (uint64_t) index;
    int shift = index / 64 - 1;
    uint64_t top = (uint64_t) (index - 64 * shift);
    return (top << shift) + ((1ULL << shift) >> 1);
}

static void
s_hist_add (histo_t *h, int64_t v)
{
    if (v < 0)
        v = 0;
    h->counts [s_hist_index ((uint64_t) v)]++;
    h->total++;
    h->sum += (double) v;
    if ((uint64_t) v > h->max)
        h->max = (uint64_t) v;
}

//  Percentile p (0..100) in microseconds
static double
s_hist_pct (const histo_t *h, double p)
{
    if (h->total == 0)
        return 0;
    uint64_t target = (uint64_t) ceil (p / 100.0 * (double) h->total);
    if (target < 1)
        target = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_SIZE; i++) {
        seen += h->counts [i];
        if (seen >= target) {
            uint64_t v = s_hist_value (i);
            return (v > h->max? h->max: v) / 1000.0;
        }
    }
    return h->max / 1000.0;
}


//  --------------------------------------------------------------------------
//  SHA-1, only for checking Sec-WebSocket-Accept (input under 120 bytes)

static uint32_t
s_rol (uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
s_sha1 (const uint8_t *data, size_t len, uint8_t out [20])
{
    assert (len < 120);
    uint8_t msg [128] = { 0 };
    memcpy (msg, data, len);
    msg [len] = 0x80;
    size_t total = len + 9 <= 64? 64: 128;
    uint64_t bits = (uint64_t) len * 8;
    for (int i = 0; i < 8; i++)
        msg [total - 1 - i] = (uint8_t) (bits >> (8 * i));
    uint32_t h [5] = { 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0 };
    for (size_t off = 0; off < total; off += 64) {
        uint32_t w [80];
        for (int i = 0; i < 16; i++)
            w [i] = (uint32_t) msg [off + 4 * i] << 24 | (uint32_t) msg [off + 4 * i + 1] << 16
                  | (uint32_t) msg [off + 4 * i + 2] << 8 | msg [off + 4 * i + 3];
        for (int i = 16; i < 80; i++)
            w [i] = s_rol (w [i - 3] ^ w [i - 8] ^ w [i - 14] ^ w [i - 16], 1);
        uint32_t a = h [0], b = h [1], c = h [2], d = h [3], e = h [4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20)      { f = (b & c) | (~b & d);          k = 0x5A827999; }
            else if (i < 40) { f = b ^ c ^ d;                   k = 0x6ED9EBA1; }
            else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
            else             { f = b ^ c ^ d;                   k = 0xCA62C1D6; }
            uint32_t t = s_rol (a, 5) + f + e + k + w [i];
            e = d; d = c; c = s_rol (b, 30); b = a; a = t;
        }
        h [0] += a; h [1] += b; h [2] += c; h [3] += d; h [4] += e;
    }
    for (int i = 0; i < 5; i++) {
        out [4 * i]     = (uint8_t) (h [i] >> 24);
        out [4 * i + 1] = (uint8_t) (h [i] >> 16);
        out [4 * i + 2] = (uint8_t) (h [i] >> 8);
        out [4 * i + 3] = (uint8_t) h [i];
    }
}

//  The Sec-WebSocket-Accept value for key
static void
s_ws_accept (const char *key, char *accept, size_t size)
{
    char buf [120];
    int n = snprintf (buf, sizeof buf, "%s%s", key, WS_GUID);
    uint8_t digest [20];
    s_sha1 ((const uint8_t *) buf, (size_t) n, digest);
    sodium_bin2base64 (accept, size, digest, 20, sodium_base64_VARIANT_ORIGINAL);
}


//  --------------------------------------------------------------------------
//  JSON scanning without a parser (hot path)

//  Finds "key": "value"; sets *val and *vlen (no unescaping)
static bool
s_json_str (const char *p, size_t n, const char *key, const char **val, size_t *vlen)
{
    char pat [40];
    size_t klen = strlen (key);
    pat [0] = '"';
    memcpy (pat + 1, key, klen);
    pat [klen + 1] = '"';
    const char *end = p + n;
    const char *q = memmem (p, n, pat, klen + 2);
    while (q) {
        const char *r = q + klen + 2;
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            r++;
        if (r < end && *r == ':') {
            r++;
            while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
                r++;
            if (r >= end || *r != '"')
                return false;
            const char *s = ++r;
            while (r < end && *r != '"') {
                if (*r == '\\')
                    r++;
                r++;
            }
            if (r >= end)
                return false;
            *val = s;
            *vlen = (size_t) (r - s);
            return true;
        }
        q = memmem (q + 1, (size_t) (end - q - 1), pat, klen + 2);
    }
    return false;
}

//  Finds "key": <literal>; points *val at the literal's first byte
static bool
s_json_lit (const char *p, size_t n, const char *key, const char **val)
{
    char pat [40];
    size_t klen = strlen (key);
    pat [0] = '"';
    memcpy (pat + 1, key, klen);
    pat [klen + 1] = '"';
    const char *end = p + n;
    const char *q = memmem (p, n, pat, klen + 2);
    while (q) {
        const char *r = q + klen + 2;
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            r++;
        if (r < end && *r == ':') {
            r++;
            while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
                r++;
            if (r >= end)
                return false;
            *val = r;
            return true;
        }
        q = memmem (q + 1, (size_t) (end - q - 1), pat, klen + 2);
    }
    return false;
}

static int64_t
s_digits (const char *p, const char *end)
{
    int64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

static bool
s_is (const char *v, size_t vlen, const char *lit)
{
    size_t n = strlen (lit);
    return vlen == n && memcmp (v, lit, n) == 0;
}


//  --------------------------------------------------------------------------
//  Sockets and epoll

static void
s_set_events (bench_t *self, int fd, void *ptr, uint32_t events, int op)
{
    struct epoll_event ev = { .events = events, .data.ptr = ptr };
    if (epoll_ctl (self->epfd, op, fd, &ev) == -1 && op != EPOLL_CTL_DEL)
        fprintf (stderr, "chat-bench: epoll_ctl: %s\n", strerror (errno));
}

//  Non-blocking connect to the server; source is 0 or the address to bind
static int
s_tcp_connect (bench_t *self, uint32_t source)
{
    int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -1;
    int one = 1;
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source) {
#ifdef IP_BIND_ADDRESS_NO_PORT
        setsockopt (fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
        struct sockaddr_in src = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (source) };
        if (bind (fd, (struct sockaddr *) &src, sizeof src) == -1) {
            close (fd);
            return -1;
        }
    }
    if (connect (fd, (struct sockaddr *) &self->server, sizeof self->server) == -1
    &&  errno != EINPROGRESS) {
        close (fd);
        return -1;
    }
    return fd;
}

static int
s_socket_error (int fd)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
        return errno;
    return err;
}


//  --------------------------------------------------------------------------
//  WebSocket: sending

static void
s_mark_dirty (bench_t *self, conn_t *c)
{
    if (!c->dirty) {
        c->dirty = true;
        self->dirty [self->dirty_count++] = c;
    }
}

//  Room for n more bytes at the end of tx
static char *
s_tx_reserve (conn_t *c, size_t n)
{
    if (c->tx_off > 0 && c->tx_off == c->tx_len)
        c->tx_off = c->tx_len = 0;
    if (c->tx_cap - c->tx_len < n) {
        if (c->tx_off > 0) {
            memmove (c->tx, c->tx + c->tx_off, c->tx_len - c->tx_off);
            c->tx_len -= c->tx_off;
            c->tx_off = 0;
        }
        if (c->tx_cap - c->tx_len < n) {
            size_t cap = c->tx_cap * 2;
            while (cap - c->tx_len < n)
                cap *= 2;
            char *tx = realloc (c->tx, cap);
            assert (tx);
            c->tx = tx;
            c->tx_cap = cap;
        }
    }
    return c->tx + c->tx_len;
}

//  Append one masked frame (opcode) with payload to c's send buffer
static void
s_ws_frame (bench_t *self, conn_t *c, int opcode, const char *payload, size_t len)
{
    if (c->state != WS_OPEN)
        return;
    char *out = s_tx_reserve (c, len + 14);
    size_t hl = 0;
    out [hl++] = (char) (0x80 | opcode);
    if (len < 126)
        out [hl++] = (char) (0x80 | len);
    else
    if (len < 65536) {
        out [hl++] = (char) (0x80 | 126);
        out [hl++] = (char) (len >> 8);
        out [hl++] = (char) len;
    }
    else {
        out [hl++] = (char) (0x80 | 127);
        for (int i = 7; i >= 0; i--)
            out [hl++] = (char) ((uint64_t) len >> (8 * i));
    }
    uint32_t r = (uint32_t) s_rand (self);
    uint8_t key [4];
    memcpy (key, &r, 4);
    memcpy (out + hl, key, 4);
    hl += 4;
    uint8_t *dst = (uint8_t *) out + hl;
    const uint8_t *src = (const uint8_t *) payload;
    //  Mask 8 bytes at a time, then the tail
    uint64_t key8;
    uint8_t k8 [8] = { key [0], key [1], key [2], key [3], key [0], key [1], key [2], key [3] };
    memcpy (&key8, k8, 8);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy (&w, src + i, 8);
        w ^= key8;
        memcpy (dst + i, &w, 8);
    }
    for (; i < len; i++)
        dst [i] = src [i] ^ key [i & 3];
    c->tx_len += hl + len;
    s_mark_dirty (self, c);
}

//  Send one private message from c stamped with time ts (ns)
static void
s_send_message (bench_t *self, conn_t *c, int64_t ts)
{
    int content = self->opt.content_bytes;
    int padn = content > 21? content - 21: 0;
    int n = snprintf (self->scratch, self->scratch_cap,
        "{\"type\":\"private_message\",\"to_user_id\":%" PRId64 ",\"content\":\"%020" PRId64
        "%s%.*s\",\"client_id\":\"b%" PRId64 "-%" PRIu64 "\"}",
        c->peer_uid, ts, padn? " ": "", padn, self->pad, ts, c->seq++);
    assert (n > 0 && (size_t) n < self->scratch_cap);
    s_ws_frame (self, c, 0x1, self->scratch, (size_t) n);
    c->inflight++;
    self->sent++;
    if (self->in_window)
        self->w_sent++;
}

//  Ask for one history page
static void
s_send_history (bench_t *self, conn_t *c, int64_t ts)
{
    int n;
    if (c->before_id > 0)
        n = snprintf (self->scratch, self->scratch_cap,
            "{\"type\":\"load_history\",\"with_user_id\":%" PRId64 ",\"before_id\":%" PRId64
            ",\"limit\":%d,\"request_id\":\"h%" PRId64 "\"}",
            c->peer_uid, c->before_id, self->opt.history_limit, ts);
    else
        n = snprintf (self->scratch, self->scratch_cap,
            "{\"type\":\"load_history\",\"with_user_id\":%" PRId64
            ",\"limit\":%d,\"request_id\":\"h%" PRId64 "\"}",
            c->peer_uid, self->opt.history_limit, ts);
    s_ws_frame (self, c, 0x1, self->scratch, (size_t) n);
    c->inflight++;
    self->sent++;
    if (self->in_window)
        self->w_sent++;
}

//  Closed loop: c may send one more
static void
s_send_next (bench_t *self, conn_t *c, int64_t now)
{
    if (!self->sending || !c->active || c->state != WS_OPEN)
        return;
    if (self->opt.rate > 0 && self->phase == PH_RUN)
        return;                         //  Open loop: the timer sends
    if (self->phase == PH_FILL) {
        if (self->sent >= (uint64_t) self->opt.history_fill)
            return;
        s_send_message (self, c, now);
    }
    else
    if (self->opt.mode == MODE_HISTORY)
        s_send_history (self, c, now);
    else
        s_send_message (self, c, now);
}

static void s_ws_close (bench_t *self, conn_t *c, bool expected);

//  Write what c has queued
static void
s_flush (bench_t *self, conn_t *c)
{
    while (c->tx_off < c->tx_len) {
        ssize_t n = send (c->fd, c->tx + c->tx_off, c->tx_len - c->tx_off, MSG_NOSIGNAL);
        if (n > 0)
            c->tx_off += (size_t) n;
        else
        if (n == -1 && errno == EINTR)
            continue;
        else
        if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                c->want_out = true;
                s_set_events (self, c->fd, c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            }
            return;
        }
        else {
            s_ws_close (self, c, false);
            return;
        }
    }
    c->tx_off = c->tx_len = 0;
    if (c->tx_cap > 4 * TX_INIT) {
        free (c->tx);
        c->tx = malloc (TX_INIT);
        assert (c->tx);
        c->tx_cap = TX_INIT;
    }
    if (c->want_out) {
        c->want_out = false;
        s_set_events (self, c->fd, c, EPOLLIN, EPOLL_CTL_MOD);
    }
}

static void
s_flush_dirty (bench_t *self)
{
    for (int i = 0; i < self->dirty_count; i++) {
        conn_t *c = self->dirty [i];
        c->dirty = false;
        if (c->state == WS_OPEN || c->closing)
            if (c->fd >= 0)
                s_flush (self, c);
    }
    self->dirty_count = 0;
}


//  --------------------------------------------------------------------------
//  WebSocket: connection life

static void
s_ws_close (bench_t *self, conn_t *c, bool expected)
{
    if (c->fd < 0)
        return;
    if (!expected && !c->closing && c->state == WS_OPEN && self->phase != PH_DONE) {
        self->closes++;
        s_error (self, "close_eof", 9);
    }
    s_set_events (self, c->fd, c, 0, EPOLL_CTL_DEL);
    close (c->fd);
    c->fd = -1;
    if (c->state == WS_OPEN)
        self->connected--;
    else
    if (c->state == WS_CONNECTING || c->state == WS_HANDSHAKE) {
        self->connect_pending--;
        self->connect_failed++;
    }
    c->state = WS_CLOSED;
    c->tx_off = c->tx_len = 0;
}

static void
s_ws_start (bench_t *self, conn_t *c)
{
    uint32_t source = 0;
    if (self->spread_source)
        source = 0x7F000001u + (uint32_t) ((self->opt.offset + c->index) / self->opt.conns_per_ip);
    c->fd = s_tcp_connect (self, source);
    if (c->fd == -1) {
        s_errorf (self, "ws_socket_%.*s", strerror (errno), strlen (strerror (errno)));
        self->connect_failed++;
        c->state = WS_CLOSED;
        return;
    }
    if (!c->rx) {
        c->rx = malloc (RX_INIT);
        c->tx = malloc (TX_INIT);
        assert (c->rx && c->tx);
        c->rx_cap = RX_INIT;
        c->tx_cap = TX_INIT;
    }
    c->state = WS_CONNECTING;
    c->want_out = true;
    self->connect_pending++;
    s_set_events (self, c->fd, c, EPOLLOUT, EPOLL_CTL_ADD);
}

//  The TCP connection is up: send the upgrade request
static void
s_ws_connected (bench_t *self, conn_t *c)
{
    int err = s_socket_error (c->fd);
    if (err) {
        s_errorf (self, "ws_connect_%.*s", strerror (err), strlen (strerror (err)));
        s_ws_close (self, c, true);
        return;
    }
    uint8_t raw [16];
    randombytes_buf (raw, sizeof raw);
    sodium_bin2base64 (c->ws_key, sizeof c->ws_key, raw, sizeof raw, sodium_base64_VARIANT_ORIGINAL);
    int n = snprintf (c->tx, c->tx_cap,
        "GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nCookie: session=%s\r\n\r\n",
        self->opt.host, self->opt.port, c->ws_key, c->cookie);
    assert (n > 0 && (size_t) n < c->tx_cap);
    c->tx_off = 0;
    c->tx_len = (size_t) n;
    c->state = WS_HANDSHAKE;
    c->want_out = false;
    s_set_events (self, c->fd, c, EPOLLIN, EPOLL_CTL_MOD);
    s_flush (self, c);
}

//  Headers of the upgrade response are in rx: check them
static int
s_ws_handshake (bench_t *self, conn_t *c)
{
    char *end = memmem (c->rx, c->rx_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->rx_len == c->rx_cap) {
            s_error (self, "ws_handshake_too_long", 21);
            return -1;
        }
        return 0;                       //  Need more
    }
    size_t hlen = (size_t) (end - c->rx) + 4;
    int status = 0;
    if (c->rx_len > 12)
        status = atoi (c->rx + 9);
    if (status != 101) {
        char name [32];
        int n = snprintf (name, sizeof name, "ws_status_%d", status);
        s_error (self, name, (size_t) n);
        return -1;
    }
    char expect [40];
    s_ws_accept (c->ws_key, expect, sizeof expect);
    bool ok = false;
    for (char *line = c->rx; line < end; ) {
        char *eol = memmem (line, (size_t) (end + 2 - line), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t) (eol - line) > 21 && strncasecmp (line, "Sec-WebSocket-Accept:", 21) == 0) {
            char *v = line + 21;
            while (*v == ' ')
                v++;
            ok = (size_t) (eol - v) == strlen (expect) && memcmp (v, expect, strlen (expect)) == 0;
        }
        line = eol + 2;
    }
    if (!ok) {
        s_error (self, "ws_bad_accept", 13);
        return -1;
    }
    memmove (c->rx, c->rx + hlen, c->rx_len - hlen);
    c->rx_len -= hlen;
    c->state = WS_OPEN;
    self->connect_pending--;
    self->connected++;
    self->connected_ever++;
    return 1;
}


//  --------------------------------------------------------------------------
//  WebSocket: receiving

//  The message's type, if its first bytes show it
static bool
s_peek_type (const char *p, size_t n, const char **type, size_t *tlen)
{
    return s_json_str (p, n < 256? n: 256, "type", type, tlen);
}

//  One complete text message from the server
static void
s_on_text (bench_t *self, conn_t *c, const char *p, size_t n, int64_t now)
{
    const char *type;
    size_t tlen;
    if (!s_json_str (p, n, "type", &type, &tlen)) {
        s_error (self, "frame_without_type", 18);
        return;
    }
    const char *v;
    size_t vlen;
    if (s_is (type, tlen, "message_delivered")) {
        c->inflight--;
        self->acked++;
        if (s_json_str (p, n, "client_id", &v, &vlen) && vlen > 1 && v [0] == 'b') {
            int64_t ts = s_digits (v + 1, v + vlen);
            if (self->in_window) {
                self->w_acked++;
                s_hist_add (&self->h_ack, now - ts);
            }
        }
        s_send_next (self, c, now);
    }
    else
    if (s_is (type, tlen, "private_message")) {
        self->delivered++;
        if (s_json_str (p, n, "content", &v, &vlen) && vlen >= 20) {
            int64_t ts = s_digits (v, v + 20);
            if (self->in_window) {
                self->w_delivered++;
                s_hist_add (&self->h_deliver, now - ts);
            }
        }
    }
    else
    if (s_is (type, tlen, "history_loaded")) {
        c->inflight--;
        self->acked++;
        if (s_json_str (p, n, "request_id", &v, &vlen) && vlen > 1 && v [0] == 'h') {
            int64_t ts = s_digits (v + 1, v + vlen);
            if (self->in_window) {
                self->w_acked++;
                s_hist_add (&self->h_ack, now - ts);
            }
        }
        //  Page backwards: the first message has the smallest id
        const char *lit;
        int64_t first_id = 0;
        if (s_json_lit (p, n, "message_id", &lit))
            first_id = s_digits (lit, p + n);
        uint64_t count = 0;
        for (const char *q = p; (q = memmem (q, (size_t) (p + n - q), "\"message_id\"", 12)); q += 12)
            count++;
        self->history_msgs += count;
        bool more = s_json_lit (p, n, "has_more", &lit) && *lit == 't';
        c->before_id = more && first_id > 0? first_id: 0;
        s_send_next (self, c, now);
    }
    else
    if (s_is (type, tlen, "message_failed")) {
        c->inflight--;
        self->failed++;
        if (self->in_window)
            self->w_failed++;
        if (s_json_str (p, n, "error", &v, &vlen))
            s_errorf (self, "failed_%.*s", v, vlen);
        else
            s_error (self, "failed", 6);
        s_send_next (self, c, now);
    }
    else
    if (s_is (type, tlen, "online_users"))
        c->got_first = true;
    else
    if (s_is (type, tlen, "user_online") || s_is (type, tlen, "user_offline")
    ||  s_is (type, tlen, "typing") || s_is (type, tlen, "messages_read"))
        self->presence++;
    else
    if (s_is (type, tlen, "error") || s_is (type, tlen, "request_failed")) {
        if (s_json_str (p, n, "error", &v, &vlen))
            s_errorf (self, "error_%.*s", v, vlen);
        else
            s_error (self, "error", 5);
        if (self->opt.mode == MODE_HISTORY && c->inflight > 0) {
            c->inflight--;
            s_send_next (self, c, now);
        }
    }
    else
        s_errorf (self, "unexpected_%.*s", type, tlen);
}

static void
s_frag_append (conn_t *c, const char *p, size_t n)
{
    if (c->frag_cap - c->frag_len < n) {
        size_t cap = c->frag_cap? c->frag_cap: 4096;
        while (cap - c->frag_len < n)
            cap *= 2;
        char *frag = realloc (c->frag, cap);
        assert (frag);
        c->frag = frag;
        c->frag_cap = cap;
    }
    memcpy (c->frag + c->frag_len, p, n);
    c->frag_len += n;
}

static void
s_frag_reset (conn_t *c)
{
    c->frag_active = false;
    c->frag_skip = false;
    c->frag_len = 0;
    if (c->frag_cap > 65536) {
        free (c->frag);
        c->frag = NULL;
        c->frag_cap = 0;
    }
}

//  A whole frame: opcode, fin and (unmasked) payload
static void
s_on_frame (bench_t *self, conn_t *c, int opcode, bool fin, char *p, size_t n, int64_t now)
{
    switch (opcode) {
        case 0x1:                       //  Text
            if (c->frag_active) {
                s_error (self, "ws_protocol_text_in_fragment", 28);
                s_frag_reset (c);
            }
            if (fin)
                s_on_text (self, c, p, n, now);
            else {
                const char *type;
                size_t tlen;
                c->frag_active = true;
                c->frag_skip = s_peek_type (p, n, &type, &tlen) && s_is (type, tlen, "online_users");
                if (c->frag_skip)
                    c->got_first = true;
                else
                    s_frag_append (c, p, n);
            }
            break;
        case 0x0:                       //  Continuation
            if (!c->frag_active) {
                s_error (self, "ws_protocol_stray_continuation", 30);
                break;
            }
            if (!c->frag_skip)
                s_frag_append (c, p, n);
            if (fin) {
                if (!c->frag_skip)
                    s_on_text (self, c, c->frag, c->frag_len, now);
                s_frag_reset (c);
            }
            break;
        case 0x2:
            s_error (self, "ws_binary_frame", 15);
            break;
        case 0x8: {                     //  Close: answer with the same code
            int code = n >= 2? ((uint8_t) p [0] << 8 | (uint8_t) p [1]): 1005;
            if (self->phase != PH_DONE) {
                char name [32];
                int len = snprintf (name, sizeof name, "close_%d", code);
                s_error (self, name, (size_t) len);
                self->closes++;
            }
            s_ws_frame (self, c, 0x8, p, n >= 2? 2: 0);
            c->closing = true;
            break;
        }
        case 0x9:                       //  Ping
            s_ws_frame (self, c, 0xA, p, n);
            break;
        case 0xA:                       //  Pong
            break;
        default:
            s_error (self, "ws_bad_opcode", 13);
            break;
    }
}

//  Consume whole frames from rx
static void
s_ws_parse (bench_t *self, conn_t *c, int64_t now)
{
    size_t pos = 0;
    while (pos < c->rx_len) {
        if (c->skip_left) {
            size_t take = c->rx_len - pos;
            if (take > c->skip_left)
                take = (size_t) c->skip_left;
            pos += take;
            c->skip_left -= take;
            continue;
        }
        uint8_t *h = (uint8_t *) c->rx + pos;
        size_t avail = c->rx_len - pos;
        if (avail < 2)
            break;
        bool fin = h [0] & 0x80;
        int opcode = h [0] & 0x0F;
        bool masked = h [1] & 0x80;
        uint64_t plen = h [1] & 0x7F;
        size_t hl = 2;
        if (plen == 126) {
            if (avail < 4)
                break;
            plen = (uint64_t) h [2] << 8 | h [3];
            hl = 4;
        }
        else
        if (plen == 127) {
            if (avail < 10)
                break;
            plen = 0;
            for (int i = 0; i < 8; i++)
                plen = plen << 8 | h [2 + i];
            hl = 10;
        }
        if (masked)
            hl += 4;
        if (avail < hl)
            break;
        if (avail - hl < plen) {
            //  Incomplete. If it cannot fit the buffer, keep it or skip it.
            if (hl + plen > c->rx_cap) {
                size_t have = avail - hl;
                const char *type;
                size_t tlen;
                bool skip = false;
                if (opcode == 0x1 && !masked) {
                    if (have < 256 && !s_peek_type ((char *) h + hl, have, &type, &tlen))
                        break;          //  Need more bytes to decide
                    skip = s_peek_type ((char *) h + hl, have, &type, &tlen)
                        && s_is (type, tlen, "online_users");
                    if (skip) {
                        c->got_first = true;
                        if (!fin) {
                            c->frag_active = true;
                            c->frag_skip = true;
                        }
                    }
                }
                else
                if (opcode == 0x0 && c->frag_active && c->frag_skip) {
                    skip = true;
                    if (fin)
                        s_frag_reset (c);
                }
                if (skip) {
                    c->skip_left = plen - have;
                    pos = c->rx_len;
                    break;
                }
                if (hl + plen > RX_MAX) {
                    s_error (self, "ws_frame_too_large", 18);
                    s_ws_close (self, c, true);
                    return;
                }
                //  Keep it: make the buffer big enough
                memmove (c->rx, c->rx + pos, avail);
                c->rx_len = avail;
                pos = 0;
                size_t cap = c->rx_cap;
                while (cap < hl + plen)
                    cap *= 2;
                char *rx = realloc (c->rx, cap);
                assert (rx);
                c->rx = rx;
                c->rx_cap = cap;
            }
            break;
        }
        char *payload = (char *) h + hl;
        if (masked) {
            const uint8_t *key = h + hl - 4;
            for (uint64_t i = 0; i < plen; i++)
                payload [i] ^= (char) key [i & 3];
        }
        pos += hl + plen;
        s_on_frame (self, c, opcode, fin, payload, (size_t) plen, now);
        if (c->fd < 0)
            return;
    }
    if (pos > 0) {
        memmove (c->rx, c->rx + pos, c->rx_len - pos);
        c->rx_len -= pos;
    }
    if (c->rx_cap > RX_INIT && c->rx_len <= RX_INIT / 2 && c->skip_left == 0) {
        char *rx = realloc (c->rx, RX_INIT);
        if (rx) {
            c->rx = rx;
            c->rx_cap = RX_INIT;
        }
    }
}

static void
s_ws_readable (bench_t *self, conn_t *c)
{
    //  Read until the socket is empty or we read a lot (fairness)
    for (int round = 0; round < 8; round++) {
        if (c->rx_len == c->rx_cap) {
            size_t cap = c->rx_cap * 2;
            char *rx = realloc (c->rx, cap);
            assert (rx);
            c->rx = rx;
            c->rx_cap = cap;
        }
        ssize_t n = recv (c->fd, c->rx + c->rx_len, c->rx_cap - c->rx_len, 0);
        if (n == 0) {
            s_ws_close (self, c, false);
            return;
        }
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                s_ws_close (self, c, false);
            return;
        }
        bool full = (size_t) n == c->rx_cap - c->rx_len;
        c->rx_len += (size_t) n;
        int64_t now = s_now ();
        if (c->state == WS_HANDSHAKE) {
            int rc = s_ws_handshake (self, c);
            if (rc == -1) {
                s_ws_close (self, c, true);
                return;
            }
            if (rc == 0)
                continue;
        }
        s_ws_parse (self, c, now);
        if (c->fd < 0)
            return;
        if (c->closing) {
            s_flush (self, c);          //  Our close frame, best effort
            s_ws_close (self, c, true);
            return;
        }
        if (!full)
            return;
    }
}

static void
s_ws_event (bench_t *self, conn_t *c, uint32_t events)
{
    if (c->state == WS_CONNECTING) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            s_ws_connected (self, c);
        return;
    }
    if (events & EPOLLOUT)
        s_flush (self, c);
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        s_ws_readable (self, c);
}


//  --------------------------------------------------------------------------
//  HTTP: register and log in

static void s_http_next (bench_t *self, http_agent_t *a);

static void
s_http_disconnect (bench_t *self, http_agent_t *a)
{
    if (a->fd >= 0) {
        s_set_events (self, a->fd, a, 0, EPOLL_CTL_DEL);
        close (a->fd);
    }
    a->fd = -1;
    a->state = HS_NONE;
    a->rx_len = 0;
}

static void
s_http_build (bench_t *self, http_agent_t *a)
{
    conn_t *u = &self->conns [a->user];
    char body [256];
    int blen = snprintf (body, sizeof body, "{\"nickname\":\"%s\",\"password\":\"%s\"}",
                         u->nickname, PASSWORD);
    int n = snprintf (a->req, sizeof a->req,
        "POST /api/%s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n%s",
        a->step == 0? "register": "login", self->opt.host, self->opt.port, blen, body);
    assert (n > 0 && (size_t) n < sizeof a->req);
    a->req_len = (size_t) n;
    a->req_off = 0;
}

static void
s_http_write (bench_t *self, http_agent_t *a)
{
    while (a->req_off < a->req_len) {
        ssize_t n = send (a->fd, a->req + a->req_off, a->req_len - a->req_off, MSG_NOSIGNAL);
        if (n > 0)
            a->req_off += (size_t) n;
        else
        if (n == -1 && (errno == EAGAIN || errno == EINTR)) {
            s_set_events (self, a->fd, a, EPOLLOUT | EPOLLIN, EPOLL_CTL_MOD);
            return;
        }
        else {
            s_http_disconnect (self, a);
            return;
        }
    }
    a->state = HS_SENT;
    s_set_events (self, a->fd, a, EPOLLIN, EPOLL_CTL_MOD);
}

//  Send the current request, connecting first if need be
static void
s_http_send (bench_t *self, http_agent_t *a)
{
    a->deadline = s_now () + 60 * 1000000000LL;
    if (a->fd < 0) {
        a->fd = s_tcp_connect (self, 0);
        if (a->fd == -1) {
            s_errorf (self, "http_socket_%.*s", strerror (errno), strlen (strerror (errno)));
            self->login_failed++;
            a->user = -1;
            return;
        }
        a->state = HS_CONNECTING;
        s_set_events (self, a->fd, a, EPOLLOUT, EPOLL_CTL_ADD);
        return;
    }
    s_http_write (self, a);
}

//  The request failed at the transport: resend it on a new connection
static void
s_http_retry (bench_t *self, http_agent_t *a, const char *why)
{
    s_http_disconnect (self, a);
    if (a->user < 0)
        return;
    if (++a->retries > 3) {
        s_error (self, why, strlen (why));
        self->login_failed++;
        a->user = -1;
        s_http_next (self, a);
        return;
    }
    a->req_off = 0;
    s_http_send (self, a);
}

//  Start serving the next user, if any
static void
s_http_next (bench_t *self, http_agent_t *a)
{
    while (a->user < 0 && self->login_next < self->opt.users) {
        a->user = self->login_next++;
        a->step = 0;
        a->retries = 0;
        s_http_build (self, a);
        s_http_send (self, a);
    }
}

//  A whole response: status, headers (as text), body
static void
s_http_response (bench_t *self, http_agent_t *a, int status, const char *headers,
                 size_t hlen, const char *body, size_t blen)
{
    conn_t *u = &self->conns [a->user];
    if (a->step == 0) {
        if (status == 201 || status == 409) {
            a->step = 1;
            a->retries = 0;
            s_http_build (self, a);
            return;                     //  Caller sends it
        }
        char name [32];
        int n = snprintf (name, sizeof name, "register_%d", status);
        s_error (self, name, (size_t) n);
        self->login_failed++;
        a->user = -1;
        return;
    }
    if (status != 200) {
        char name [32];
        int n = snprintf (name, sizeof name, "login_%d", status);
        s_error (self, name, (size_t) n);
        self->login_failed++;
        a->user = -1;
        return;
    }
    //  Set-Cookie: session=VALUE; ...
    const char *ck = NULL;
    for (const char *line = headers; line < headers + hlen; ) {
        const char *eol = memmem (line, (size_t) (headers + hlen - line), "\r\n", 2);
        if (!eol)
            eol = headers + hlen;
        if ((size_t) (eol - line) > 11 && strncasecmp (line, "Set-Cookie:", 11) == 0) {
            const char *v = memmem (line, (size_t) (eol - line), "session=", 8);
            if (v) {
                v += 8;
                const char *e = v;
                while (e < eol && *e != ';' && *e != ' ')
                    e++;
                if ((size_t) (e - v) < sizeof u->cookie && e > v) {
                    memcpy (u->cookie, v, (size_t) (e - v));
                    u->cookie [e - v] = 0;
                    ck = v;
                }
            }
        }
        line = eol + 2;
    }
    json_error_t jerr;
    json_t *root = json_loadb (body, blen, 0, &jerr);
    json_t *uid = root? json_object_get (root, "user_id"): NULL;
    if (!ck || !json_is_integer (uid)) {
        s_error (self, "login_bad_response", 18);
        self->login_failed++;
    }
    else {
        u->user_id = json_integer_value (uid);
        self->logged_in++;
        self->ready [self->ready_tail++] = a->user;
    }
    json_decref (root);
    a->user = -1;
}

//  Decode a chunked body in place once it is complete; returns its length,
//  or -1 (nothing changed) while it is incomplete
static long
s_dechunk (char *body, size_t len, size_t *consumed)
{
    for (int pass = 0; pass < 2; pass++) {
        size_t in = 0, out = 0;
        while (true) {
            char *eol = memmem (body + in, len - in, "\r\n", 2);
            if (!eol)
                return -1;
            size_t size = strtoul (body + in, NULL, 16);
            in = (size_t) (eol - body) + 2;
            if (size == 0) {
                if (len - in < 2)
                    return -1;
                if (pass == 1) {
                    *consumed = in + 2;
                    return (long) out;
                }
                break;
            }
            if (len - in < size + 2)
                return -1;
            if (pass == 1)
                memmove (body + out, body + in, size);
            out += size;
            in += size + 2;
        }
    }
    return -1;
}

static void
s_http_readable (bench_t *self, http_agent_t *a)
{
    ssize_t n = recv (a->fd, a->rx + a->rx_len, sizeof a->rx - a->rx_len - 1, 0);
    if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR)) {
        s_http_retry (self, a, "http_connection_lost");
        return;
    }
    if (n == -1)
        return;
    a->rx_len += (size_t) n;
    a->rx [a->rx_len] = 0;
    char *hend = memmem (a->rx, a->rx_len, "\r\n\r\n", 4);
    if (!hend)
        return;
    size_t hlen = (size_t) (hend - a->rx) + 4;
    int status = a->rx_len > 12? atoi (a->rx + 9): 0;
    long clen = -1;
    bool chunked = false, close_after = false;
    for (char *line = a->rx; line < hend; ) {
        char *eol = memmem (line, (size_t) (hend + 2 - line), "\r\n", 2);
        if (!eol)
            break;
        if (strncasecmp (line, "Content-Length:", 15) == 0)
            clen = strtol (line + 15, NULL, 10);
        else
        if (strncasecmp (line, "Transfer-Encoding:", 18) == 0 && memmem (line, (size_t) (eol - line), "chunked", 7))
            chunked = true;
        else
        if (strncasecmp (line, "Connection:", 11) == 0 && memmem (line, (size_t) (eol - line), "close", 5))
            close_after = true;
        line = eol + 2;
    }
    char *body = a->rx + hlen;
    size_t have = a->rx_len - hlen;
    size_t blen = 0, consumed = 0;
    if (chunked) {
        long len = s_dechunk (body, have, &consumed);
        if (len < 0)
            return;
        blen = (size_t) len;
    }
    else
    if (clen >= 0) {
        if (have < (size_t) clen)
            return;
        blen = consumed = (size_t) clen;
    }
    else {
        blen = consumed = have;         //  No length: the body is what we have
        close_after = true;
    }
    s_http_response (self, a, status, a->rx, hlen, body, blen);
    size_t used = hlen + consumed;
    memmove (a->rx, a->rx + used, a->rx_len - used);
    a->rx_len -= used;
    if (close_after)
        s_http_disconnect (self, a);
    if (a->user >= 0)
        s_http_send (self, a);          //  The login after the registration
    else
        s_http_next (self, a);
}

static void
s_http_event (bench_t *self, http_agent_t *a, uint32_t events)
{
    if (a->state == HS_CONNECTING) {
        int err = s_socket_error (a->fd);
        if (err) {
            s_http_retry (self, a, "http_connect_failed");
            return;
        }
        a->state = HS_SENT;
        s_http_write (self, a);
        return;
    }
    if (events & EPOLLOUT && a->req_off < a->req_len)
        s_http_write (self, a);
    if (a->fd >= 0 && events & (EPOLLIN | EPOLLERR | EPOLLHUP))
        s_http_readable (self, a);
}


//  --------------------------------------------------------------------------
//  Phases

static void
s_arm_timer (bench_t *self, int64_t at)
{
    struct itimerspec its = { 0 };
    if (at > 0) {
        its.it_value.tv_sec = at / 1000000000LL;
        its.it_value.tv_nsec = at % 1000000000LL;
    }
    timerfd_settime (self->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
}

//  Open loop: send every message that is due by now. The timer wakes at
//  most every OPEN_LOOP_TICK (not once per message: at 20,000 msgs/s that
//  cost chat-bench 30-60 us of CPU a message); the wait is counted, since
//  latency runs from the scheduled time and send lag shows it.
static void
s_open_loop (bench_t *self, int64_t now)
{
    if (!self->sending || self->phase != PH_RUN || self->opt.rate <= 0 || self->active_count == 0)
        return;
    int burst = 0;
    while (burst++ < 100000) {
        int64_t due = self->t_run + (int64_t) ((double) self->sched_k * self->period_ns);
        if (due > now) {
            s_arm_timer (self, due > now + OPEN_LOOP_TICK? due: now + OPEN_LOOP_TICK);
            return;
        }
        conn_t *c = &self->conns [self->active [self->sched_k % (uint64_t) self->active_count]];
        self->sched_k++;
        if (c->state != WS_OPEN)
            continue;
        if (self->in_window)
            s_hist_add (&self->h_lag, now - due);
        if (self->opt.mode == MODE_HISTORY)
            s_send_history (self, c, due);
        else
            s_send_message (self, c, due);
    }
    s_arm_timer (self, now + 1000);     //  Behind: carry on right away
}

//  Build the ring of connected users and their peers
static void
s_build_ring (bench_t *self)
{
    self->active_count = 0;
    for (int i = 0; i < self->opt.users; i++)
        if (self->conns [i].state == WS_OPEN)
            self->active [self->active_count++] = i;
    for (int j = 0; j < self->active_count; j++) {
        conn_t *c = &self->conns [self->active [j]];
        c->active = true;
        c->peer_uid = self->conns [self->active [(j + 1) % self->active_count]].user_id;
    }
}

static int64_t
s_inflight (bench_t *self)
{
    int64_t total = 0;
    for (int j = 0; j < self->active_count; j++) {
        conn_t *c = &self->conns [self->active [j]];
        if (c->state == WS_OPEN)
            total += c->inflight;
    }
    return total;
}

static void
s_start_sending (bench_t *self, int64_t now)
{
    self->sending = true;
    if (self->opt.rate > 0 && self->phase == PH_RUN) {
        self->sched_k = 0;
        s_open_loop (self, now);
        return;
    }
    for (int w = 0; w < self->opt.window; w++)
        for (int j = 0; j < self->active_count; j++)
            s_send_next (self, &self->conns [self->active [j]], now);
}

static void
s_enter_run (bench_t *self, int64_t now)
{
    self->phase = PH_RUN;
    self->t_run = now;
    self->t_win_start = now + (int64_t) (self->opt.warmup * 1e9);
    self->t_win_end = self->t_win_start + (int64_t) (self->opt.duration * 1e9);
    self->sent = self->acked = self->failed = self->delivered = 0;
    for (int j = 0; j < self->active_count; j++) {
        self->conns [self->active [j]].inflight = 0;
        self->conns [self->active [j]].before_id = 0;
    }
    if (self->opt.mode != MODE_CONNECT)
        s_start_sending (self, now);
    if (self->opt.warmup <= 0) {
        s_read_proc (self->opt.server_pid, &self->srv_start);
        self->own_cpu_start = s_own_cpu ();
        self->in_window = true;
    }
}

static void
s_progress (bench_t *self, int64_t now)
{
    if (!self->opt.progress || now < self->t_next_progress)
        return;
    self->t_next_progress = now + 1000000000LL;
    double t = (now - self->t_begin) / 1e9;
    if (self->phase == PH_SETUP || self->phase == PH_SETTLE)
        fprintf (stderr, "[%6.1fs] logging in %d/%d (failed %d), connecting %d/%d (pending %d, failed %d)\n",
                 t, self->logged_in, self->opt.users, self->login_failed,
                 self->connected, self->opt.users, self->connect_pending, self->connect_failed);
    else
        fprintf (stderr, "[%6.1fs] %s connected %d sent %" PRIu64 " acked %" PRIu64
                 " delivered %" PRIu64 " failed %" PRIu64 " errors %" PRIu64 " presence %" PRIu64 "\n",
                 t, self->phase == PH_FILL || self->phase == PH_FILL_DRAIN? "fill":
                    self->phase == PH_DRAIN? "drain": self->in_window? "window": "warmup",
                 self->connected, self->sent, self->acked, self->delivered, self->failed,
                 self->errors, self->presence);
}

//  Everything driven by time and by counters
static void
s_tick (bench_t *self, int64_t now)
{
    switch (self->phase) {
        case PH_SETUP:
            for (int i = 0; i < self->opt.http_parallel; i++) {
                http_agent_t *a = &self->agents [i];
                if (a->user >= 0 && a->fd >= 0 && now > a->deadline)
                    s_http_retry (self, a, "http_timeout");
            }
            while (self->ready_head < self->ready_tail
               &&  self->connect_pending < self->opt.connect_parallel)
                s_ws_start (self, &self->conns [self->ready [self->ready_head++]]);
            if (self->logged_in + self->login_failed == self->opt.users
            &&  self->ready_head == self->ready_tail && self->connect_pending == 0) {
                for (int i = 0; i < self->opt.http_parallel; i++)
                    s_http_disconnect (self, &self->agents [i]);
                self->phase = PH_SETTLE;
                self->t_phase = now;
            }
            else
            if (now - self->t_begin > (int64_t) (self->opt.setup_timeout * 1e9)) {
                s_error (self, "setup_timeout", 13);
                self->phase = PH_SETTLE;
                self->t_phase = now;
            }
            break;
        case PH_SETTLE: {
            //  Wait (up to 30 s) until each connection has its online_users
            bool all = true;
            for (int i = 0; i < self->opt.users && all; i++)
                if (self->conns [i].state == WS_OPEN && !self->conns [i].got_first)
                    all = false;
            if (all || now - self->t_phase > 30000000000LL) {
                if (!all)
                    s_error (self, "online_users_missing", 20);
                s_build_ring (self);
                if (self->opt.mode != MODE_CONNECT && self->active_count < 2) {
                    fprintf (stderr, "chat-bench: fewer than 2 users connected\n");
                    self->phase = PH_DONE;
                    break;
                }
                if (self->opt.mode == MODE_HISTORY && self->opt.history_fill > 0) {
                    self->phase = PH_FILL;
                    self->t_phase = now;
                    s_start_sending (self, now);
                }
                else
                    s_enter_run (self, now);
            }
            break;
        }
        case PH_FILL:
            if (self->sent >= (uint64_t) self->opt.history_fill) {
                self->sending = false;
                self->phase = PH_FILL_DRAIN;
            }
            break;
        case PH_FILL_DRAIN:
            if (s_inflight (self) <= 0 || now - self->t_phase > 600000000000LL) {
                self->filled = self->acked;
                self->fill_s = (now - self->t_phase) / 1e9;
                s_enter_run (self, now);
            }
            break;
        case PH_RUN:
            if (!self->in_window && now >= self->t_win_start && now < self->t_win_end) {
                s_read_proc (self->opt.server_pid, &self->srv_start);
                self->own_cpu_start = s_own_cpu ();
                self->in_window = true;
            }
            if (now >= self->t_win_end) {
                s_read_proc (self->opt.server_pid, &self->srv_end);
                self->own_cpu_end = s_own_cpu ();
                self->in_window = false;
                self->sending = false;
                s_arm_timer (self, 0);
                self->phase = PH_DRAIN;
                self->t_drain_end = now + (int64_t) (self->opt.drain * 1e9);
            }
            break;
        case PH_DRAIN: {
            int64_t inflight = self->opt.mode == MODE_CONNECT? 0: s_inflight (self);
            bool deliveries = self->opt.mode != MODE_MESSAGES || self->delivered >= self->acked;
            if ((inflight <= 0 && deliveries) || now >= self->t_drain_end) {
                self->lost = inflight;
                self->phase = PH_DONE;
            }
            break;
        }
        case PH_DONE:
            break;
    }
    s_progress (self, now);
}

static int
s_next_timeout (bench_t *self, int64_t now)
{
    int64_t next = now + 100000000LL;   //  At most 100 ms
    if (self->phase == PH_RUN) {
        if (!self->in_window && self->t_win_start < next)
            next = self->t_win_start;
        if (self->t_win_end < next)
            next = self->t_win_end;
    }
    if (next <= now)
        return 0;
    return (int) ((next - now + 999999) / 1000000);
}


//  --------------------------------------------------------------------------
//  Report

static void
s_report (bench_t *self)
{
    double window = self->opt.duration;
    double srv_cpu = self->srv_start.ok && self->srv_end.ok? self->srv_end.cpu_s - self->srv_start.cpu_s: -1;
    double own_cpu = self->own_cpu_end - self->own_cpu_start;
    uint64_t wmsgs = self->w_acked;
    double srv_us = srv_cpu >= 0 && wmsgs? srv_cpu * 1e6 / wmsgs: -1;
    double own_us = wmsgs? own_cpu * 1e6 / wmsgs: -1;
    int64_t missing = self->opt.mode == MODE_MESSAGES? (int64_t) self->acked - (int64_t) self->delivered: 0;
    const char *mode = self->opt.mode == MODE_CONNECT? "connect":
                       self->opt.mode == MODE_HISTORY? "history":
                       self->opt.rate > 0? "open": "closed";
    long rss_per_conn_b = -1;
    if (self->srv_base.ok && self->srv_end.ok && self->connected > 0)
        rss_per_conn_b = (self->srv_end.rss_kb - self->srv_base.rss_kb) * 1024 / self->connected;
    if (self->opt.json) {
        printf ("{\"mode\":\"%s\",\"users\":%d,\"logged_in\":%d,\"connected\":%d,\"connect_failed\":%d,"
                "\"window_s\":%.3f,\"rate\":%.0f,\"window\":%d,\"content_bytes\":%d,"
                "\"sent\":%" PRIu64 ",\"acknowledged\":%" PRIu64 ",\"delivered\":%" PRIu64
                ",\"failed\":%" PRIu64 ",\"lost\":%" PRId64 ",\"missing_deliveries\":%" PRId64
                ",\"closes\":%" PRIu64 ",\"presence_frames\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"error_kinds\":{",
                mode, self->opt.users, self->logged_in, self->connected, self->connect_failed,
                window, self->opt.rate, self->opt.window, self->opt.content_bytes,
                self->sent, self->acked, self->delivered, self->failed, self->lost, missing,
                self->closes, self->presence, self->errors);
        for (int i = 0; i < self->err_kinds; i++)
            printf ("%s\"%s\":%" PRIu64, i? ",": "", self->errs [i].name, self->errs [i].count);
        printf ("},\"window_sent\":%" PRIu64 ",\"window_acked\":%" PRIu64 ",\"window_delivered\":%" PRIu64
                ",\"acks_per_s\":%.1f,\"deliveries_per_s\":%.1f",
                self->w_sent, self->w_acked, self->w_delivered,
                self->w_acked / window, self->w_delivered / window);
        const histo_t *hs [3] = { &self->h_ack, &self->h_deliver, &self->h_lag };
        const char *names [3] = { "ack_latency_us", "delivery_latency_us", "send_lag_us" };
        for (int i = 0; i < 3; i++)
            printf (",\"%s\":{\"n\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f}",
                    names [i], hs [i]->total, hs [i]->total? hs [i]->sum / hs [i]->total / 1000: 0,
                    s_hist_pct (hs [i], 50), s_hist_pct (hs [i], 90), s_hist_pct (hs [i], 99),
                    s_hist_pct (hs [i], 99.9), hs [i]->max / 1000.0);
        printf (",\"server_pid\":%d,\"server_cpu_s\":%.3f,\"server_cpu_pct\":%.2f,\"server_rss_kb_base\":%ld,"
                "\"server_rss_kb_start\":%ld,\"server_rss_kb_end\":%ld,\"server_rss_bytes_per_conn\":%ld,"
                "\"server_cpu_us_per_msg\":%.2f,\"bench_cpu_s\":%.3f,\"bench_cpu_us_per_msg\":%.2f",
                self->opt.server_pid, srv_cpu, srv_cpu >= 0? srv_cpu * 100 / window: -1,
                self->srv_base.rss_kb, self->srv_start.rss_kb, self->srv_end.rss_kb, rss_per_conn_b,
                srv_us, own_cpu, own_us);
        if (self->opt.mode == MODE_HISTORY)
            printf (",\"history_messages\":%" PRIu64 ",\"history_limit\":%d,\"filled\":%" PRIu64 ",\"fill_s\":%.1f",
                    self->history_msgs, self->opt.history_limit, self->filled, self->fill_s);
        printf ("}\n");
    }
    else {
        printf ("chat-bench: %s, %d users (%d logged in, %d connected, %d connect failures)\n",
                mode, self->opt.users, self->logged_in, self->connected, self->connect_failed);
        if (self->opt.mode == MODE_HISTORY && self->filled)
            printf ("  fill             %" PRIu64 " messages in %.1f s\n", self->filled, self->fill_s);
        printf ("  window           %.1f s after %.1f s warm-up\n", window, self->opt.warmup);
        printf ("  sent/acked       %" PRIu64 " / %" PRIu64 " (failed %" PRIu64 ", lost %" PRId64 ")\n",
                self->sent, self->acked, self->failed, self->lost);
        if (self->opt.mode == MODE_MESSAGES)
            printf ("  delivered        %" PRIu64 " (missing %" PRId64 ")\n", self->delivered, missing);
        printf ("  throughput       %.0f %s/s", self->w_acked / window,
                self->opt.mode == MODE_HISTORY? "pages": "acks");
        if (self->opt.mode == MODE_MESSAGES)
            printf (", %.0f deliveries/s", self->w_delivered / window);
        printf ("\n  latency (us)          p50       p90       p99     p99.9       max\n");
        const histo_t *hs [3] = { &self->h_ack, &self->h_deliver, &self->h_lag };
        const char *names [3] = { self->opt.mode == MODE_HISTORY? "page": "ack", "delivery", "send lag" };
        for (int i = 0; i < 3; i++)
            if (hs [i]->total)
                printf ("  %-16s %9.0f %9.0f %9.0f %9.0f %9.0f\n", names [i],
                        s_hist_pct (hs [i], 50), s_hist_pct (hs [i], 90), s_hist_pct (hs [i], 99),
                        s_hist_pct (hs [i], 99.9), hs [i]->max / 1000.0);
        if (srv_cpu >= 0) {
            printf ("  server cpu       %.2f s (%.1f%% of one core)", srv_cpu, srv_cpu * 100 / window);
            if (srv_us >= 0)
                printf (", %.2f us/msg", srv_us);
            printf ("\n  server rss       %ld kB before connecting, %ld kB at window start, %ld kB at end",
                    self->srv_base.rss_kb, self->srv_start.rss_kb, self->srv_end.rss_kb);
            if (rss_per_conn_b >= 0)
                printf (" (%ld B per connection)", rss_per_conn_b);
            printf ("\n");
        }
        printf ("  chat-bench cpu   %.2f s", own_cpu);
        if (own_us >= 0)
            printf (", %.2f us/msg", own_us);
        printf ("\n  presence frames  %" PRIu64 "\n", self->presence);
        printf ("  errors           %" PRIu64, self->errors);
        for (int i = 0; i < self->err_kinds; i++)
            printf ("%s%s=%" PRIu64, i? ", ": " (", self->errs [i].name, self->errs [i].count);
        printf ("%s\n", self->err_kinds? ")": "");
    }
    fflush (stdout);
}


//  --------------------------------------------------------------------------
//  Set-up

static void
s_usage (void)
{
    fprintf (stderr,
        "usage: chat-bench [options]\n"
        "  --url URL            server, http://HOST:PORT (default http://127.0.0.1:8080)\n"
        "  --users N            users, each with one WebSocket (default 100)\n"
        "  --prefix NAME        nicknames NAME<k> (default bench)\n"
        "  --offset K           first k (default 0), to run several instances\n"
        "  --rate R             open loop: R messages/s in total, spread evenly\n"
        "  --window W           closed loop: W messages in flight per user (default 1)\n"
        "  --duration S         measurement window (default 10)\n"
        "  --warmup S           before the window (default 2)\n"
        "  --drain S            longest wait for answers after the window (default 10)\n"
        "  --content-bytes B    message size (default 100, at least 20)\n"
        "  --connect-only       hold N idle authenticated connections for the window\n"
        "  --history            measure load_history pages instead of messaging\n"
        "  --history-fill M     with --history: first send M messages over the ring\n"
        "  --history-limit L    load_history limit (default 50)\n"
        "  --server-pid PID     meter the server's CPU and RSS from /proc/PID\n"
        "  --http-parallel P    concurrent register/login clients (default 4)\n"
        "  --connect-parallel C concurrent WebSocket handshakes (default 128)\n"
        "  --conns-per-ip K     sockets per 127.0.0.x source address (default 1000)\n"
        "  --setup-timeout S    longest login/connect phase (default 1800)\n"
        "  --json               one JSON line instead of a table\n"
        "  --progress           one line per second on stderr\n");
}

static int
s_parse_url (options_t *opt, const char *url)
{
    const char *p = url;
    if (strncmp (p, "http://", 7) == 0)
        p += 7;
    else
    if (strncmp (p, "ws://", 5) == 0)
        p += 5;
    const char *colon = strchr (p, ':');
    const char *slash = strchr (p, '/');
    size_t hlen = colon? (size_t) (colon - p): slash? (size_t) (slash - p): strlen (p);
    if (hlen == 0 || hlen >= sizeof opt->host)
        return -1;
    memcpy (opt->host, p, hlen);
    opt->host [hlen] = 0;
    opt->port = colon? atoi (colon + 1): 80;
    return opt->port > 0 && opt->port < 65536? 0: -1;
}

static int
s_parse_args (options_t *opt, int argc, char **argv)
{
    enum { O_URL = 256, O_USERS, O_PREFIX, O_OFFSET, O_RATE, O_WINDOW, O_DURATION, O_WARMUP,
           O_DRAIN, O_CONTENT, O_CONNECT_ONLY, O_HISTORY, O_HISTORY_FILL, O_HISTORY_LIMIT,
           O_PID, O_HTTP_PAR, O_CONN_PAR, O_PER_IP, O_SETUP_TIMEOUT, O_JSON, O_PROGRESS, O_HELP };
    static const struct option longopts [] = {
        { "url", required_argument, NULL, O_URL },
        { "users", required_argument, NULL, O_USERS },
        { "prefix", required_argument, NULL, O_PREFIX },
        { "offset", required_argument, NULL, O_OFFSET },
        { "rate", required_argument, NULL, O_RATE },
        { "window", required_argument, NULL, O_WINDOW },
        { "duration", required_argument, NULL, O_DURATION },
        { "warmup", required_argument, NULL, O_WARMUP },
        { "drain", required_argument, NULL, O_DRAIN },
        { "content-bytes", required_argument, NULL, O_CONTENT },
        { "connect-only", no_argument, NULL, O_CONNECT_ONLY },
        { "history", no_argument, NULL, O_HISTORY },
        { "history-fill", required_argument, NULL, O_HISTORY_FILL },
        { "history-limit", required_argument, NULL, O_HISTORY_LIMIT },
        { "server-pid", required_argument, NULL, O_PID },
        { "http-parallel", required_argument, NULL, O_HTTP_PAR },
        { "connect-parallel", required_argument, NULL, O_CONN_PAR },
        { "conns-per-ip", required_argument, NULL, O_PER_IP },
        { "setup-timeout", required_argument, NULL, O_SETUP_TIMEOUT },
        { "json", no_argument, NULL, O_JSON },
        { "progress", no_argument, NULL, O_PROGRESS },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 }
    };
    memset (opt, 0, sizeof *opt);
    strcpy (opt->host, "127.0.0.1");
    opt->port = 8080;
    opt->users = 100;
    strcpy (opt->prefix, "bench");
    opt->window = 1;
    opt->duration = 10;
    opt->warmup = 2;
    opt->drain = 10;
    opt->content_bytes = 100;
    opt->history_limit = 50;
    opt->http_parallel = 4;
    opt->connect_parallel = 128;
    opt->conns_per_ip = 1000;
    opt->setup_timeout = 1800;
    int ch;
    while ((ch = getopt_long (argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
            case O_URL:
                if (s_parse_url (opt, optarg)) {
                    fprintf (stderr, "chat-bench: bad --url %s\n", optarg);
                    return -1;
                }
                break;
            case O_USERS:        opt->users = atoi (optarg); break;
            case O_PREFIX:
                if (strlen (optarg) >= sizeof opt->prefix) {
                    fprintf (stderr, "chat-bench: --prefix too long\n");
                    return -1;
                }
                strcpy (opt->prefix, optarg);
                break;
            case O_OFFSET:       opt->offset = atoi (optarg); break;
            case O_RATE:         opt->rate = atof (optarg); break;
            case O_WINDOW:       opt->window = atoi (optarg); break;
            case O_DURATION:     opt->duration = atof (optarg); break;
            case O_WARMUP:       opt->warmup = atof (optarg); break;
            case O_DRAIN:        opt->drain = atof (optarg); break;
            case O_CONTENT:      opt->content_bytes = atoi (optarg); break;
            case O_CONNECT_ONLY: opt->mode = MODE_CONNECT; break;
            case O_HISTORY:      opt->mode = MODE_HISTORY; break;
            case O_HISTORY_FILL: opt->history_fill = atol (optarg); break;
            case O_HISTORY_LIMIT: opt->history_limit = atoi (optarg); break;
            case O_PID:          opt->server_pid = atoi (optarg); break;
            case O_HTTP_PAR:     opt->http_parallel = atoi (optarg); break;
            case O_CONN_PAR:     opt->connect_parallel = atoi (optarg); break;
            case O_PER_IP:       opt->conns_per_ip = atoi (optarg); break;
            case O_SETUP_TIMEOUT: opt->setup_timeout = atof (optarg); break;
            case O_JSON:         opt->json = true; break;
            case O_PROGRESS:     opt->progress = true; break;
            default:
                s_usage ();
                return -1;
        }
    }
    if (optind < argc || opt->users < 1 || opt->window < 1 || opt->duration <= 0
    ||  opt->warmup < 0 || opt->http_parallel < 1 || opt->connect_parallel < 1
    ||  opt->conns_per_ip < 1 || opt->rate < 0 || opt->history_limit < 1
    ||  opt->content_bytes > 65536) {
        s_usage ();
        return -1;
    }
    if (opt->content_bytes < 20)
        opt->content_bytes = 20;
    return 0;
}

static bench_t *
s_self_new (int argc, char **argv)
{
    bench_t *self = calloc (1, sizeof *self);
    assert (self);
    self->epfd = -1;
    self->timerfd = -1;
    if (s_parse_args (&self->opt, argc, argv))
        goto fail;

    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *ai = NULL;
    if (getaddrinfo (self->opt.host, NULL, &hints, &ai) || !ai) {
        fprintf (stderr, "chat-bench: cannot resolve %s\n", self->opt.host);
        goto fail;
    }
    memcpy (&self->server, ai->ai_addr, sizeof self->server);
    self->server.sin_port = htons ((uint16_t) self->opt.port);
    freeaddrinfo (ai);
    self->spread_source = (ntohl (self->server.sin_addr.s_addr) >> 24) == 127;

    self->epfd = epoll_create1 (EPOLL_CLOEXEC);
    self->timerfd = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (self->epfd == -1 || self->timerfd == -1) {
        fprintf (stderr, "chat-bench: epoll/timerfd: %s\n", strerror (errno));
        goto fail;
    }
    self->timer_kind = K_TIMER;
    s_set_events (self, self->timerfd, &self->timer_kind, EPOLLIN, EPOLL_CTL_ADD);

    int n = self->opt.users;
    self->conns = calloc ((size_t) n, sizeof (conn_t));
    self->dirty = calloc ((size_t) n, sizeof (conn_t *));
    self->ready = calloc ((size_t) n, sizeof (int));
    self->active = calloc ((size_t) n, sizeof (int));
    self->agents = calloc ((size_t) self->opt.http_parallel, sizeof (http_agent_t));
    self->scratch_cap = (size_t) self->opt.content_bytes + 512;
    self->scratch = malloc (self->scratch_cap);
    assert (self->conns && self->dirty && self->ready && self->active && self->agents && self->scratch);
    for (int i = 0; i < n; i++) {
        conn_t *c = &self->conns [i];
        c->kind = K_WS;
        c->fd = -1;
        c->index = i;
        snprintf (c->nickname, sizeof c->nickname, "%s%d", self->opt.prefix, self->opt.offset + i);
    }
    for (int i = 0; i < self->opt.http_parallel; i++) {
        self->agents [i].kind = K_HTTP;
        self->agents [i].fd = -1;
        self->agents [i].user = -1;
    }
    memset (self->pad, 'x', sizeof self->pad);
    randombytes_buf (&self->rng, sizeof self->rng);
    self->rng |= 1;
    if (self->opt.rate > 0)
        self->period_ns = 1e9 / self->opt.rate;
    return self;
fail:
    if (self->epfd >= 0)
        close (self->epfd);
    if (self->timerfd >= 0)
        close (self->timerfd);
    free (self);
    return NULL;
}

static void
s_self_destroy (bench_t **self_p)
{
    assert (self_p);
    bench_t *self = *self_p;
    if (!self)
        return;
    for (int i = 0; i < self->opt.users; i++) {
        conn_t *c = &self->conns [i];
        if (c->fd >= 0)
            close (c->fd);
        free (c->rx);
        free (c->tx);
        free (c->frag);
    }
    for (int i = 0; i < self->opt.http_parallel; i++)
        if (self->agents [i].fd >= 0)
            close (self->agents [i].fd);
    close (self->epfd);
    close (self->timerfd);
    free (self->conns);
    free (self->dirty);
    free (self->ready);
    free (self->active);
    free (self->agents);
    free (self->scratch);
    free (self);
    *self_p = NULL;
}

static void
s_raise_nofile (void)
{
    struct rlimit rl;
    if (getrlimit (RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit (RLIMIT_NOFILE, &rl);
    }
}

int
main (int argc, char **argv)
{
    if (sodium_init () < 0)
        return 1;
    signal (SIGPIPE, SIG_IGN);
    s_raise_nofile ();
    prctl (PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    bench_t *self = s_self_new (argc, argv);
    if (!self)
        return 2;
    struct rlimit rl;
    getrlimit (RLIMIT_NOFILE, &rl);
    if ((rlim_t) self->opt.users + self->opt.http_parallel + 16 > rl.rlim_cur)
        fprintf (stderr, "chat-bench: warning: %d users but only %lu file descriptors\n",
                 self->opt.users, (unsigned long) rl.rlim_cur);

    self->t_begin = s_now ();
    self->t_next_progress = self->t_begin + 1000000000LL;
    s_read_proc (self->opt.server_pid, &self->srv_base);
    for (int i = 0; i < self->opt.http_parallel; i++)
        s_http_next (self, &self->agents [i]);

    struct epoll_event events [MAX_EVENTS];
    while (self->phase != PH_DONE) {
        int64_t now = s_now ();
        int n = epoll_wait (self->epfd, events, MAX_EVENTS, s_next_timeout (self, now));
        if (n == -1 && errno != EINTR) {
            fprintf (stderr, "chat-bench: epoll_wait: %s\n", strerror (errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            kind_t kind = *(kind_t *) events [i].data.ptr;
            if (kind == K_WS)
                s_ws_event (self, (conn_t *) events [i].data.ptr, events [i].events);
            else
            if (kind == K_HTTP)
                s_http_event (self, (http_agent_t *) events [i].data.ptr, events [i].events);
            else {
                uint64_t expirations;
                if (read (self->timerfd, &expirations, sizeof expirations) < 0)
                    { /* spurious */ }
                s_open_loop (self, s_now ());
            }
        }
        s_flush_dirty (self);
        now = s_now ();
        s_tick (self, now);
        if (self->phase == PH_RUN)
            s_open_loop (self, now);
        s_flush_dirty (self);
    }
    s_report (self);
    bool ok = self->phase == PH_DONE;
    s_self_destroy (&self);
    return ok? 0: 1;
}
