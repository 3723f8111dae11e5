/*  =========================================================================
    chatd.c - main: read the configuration, start the six actors, wait for
    SIGTERM or SIGINT, stop them in order

    Owns nothing but the actors' handles and, when [server] tap is set, the
    tap proxy (a czmq zproxy: XSUB at inproc://chatd-tap, where every actor's
    tap publisher connects, XPUB at the configured endpoint for chat-tap).
    The actors wire themselves: each binds inproc://chatd-<name> and
    connects to the inboxes of the actors it sends to (include/chat_msg.h).

    Start order puts the actors that can fail on storage first, and ws-front
    last, so nothing is accepted before every actor is ready. Stop order is
    the reverse of the message path: ws-front stops accepting first, then
    rate-limiter and hub, then persistence, which stores what it holds.
    =========================================================================
*/

#include "chat_actors.h"
#include "chat_config.h"
#include "chat_msg.h"
#include <signal.h>
#include <pthread.h>
#include <sys/resource.h>

typedef struct {
    const char *name;                   //  For messages
    zactor_fn *fn;                      //  Actor function
} s_actor_spec_t;

//  Start order; chatd stops them in the order of s_stop_order
static const s_actor_spec_t s_start_order [] = {
    { "persistence",  chat_persistence_actor },
    { "auth",         chat_auth_actor },
    { "presence",     chat_presence_actor },
    { "hub",          chat_hub_actor },
    { "rate-limiter", chat_rate_limiter_actor },
    { "ws-front",     chat_ws_front_actor },
};
#define ACTOR_COUNT (sizeof s_start_order / sizeof s_start_order [0])
//  Indexes into s_start_order
static const int s_stop_order [ACTOR_COUNT] = { 5, 4, 3, 0, 2, 1 };

static void
s_usage (void)
{
    fprintf (stderr,
        "usage: chatd [-c FILE]\n"
        "  -c FILE   read the INI configuration FILE (see config/chatd.ini)\n"
        "Without -c, built-in defaults: SQLite chat.db in the working directory,\n"
        "http://127.0.0.1:8080. Any key can be set by CHAT_<SECTION>_<KEY>.\n");
}

static zactor_t *
s_tap_proxy_new (const char *endpoint)
{
    zactor_t *proxy = zactor_new (zproxy, NULL);
    assert (proxy);
    zstr_sendx (proxy, "FRONTEND", "XSUB", CHAT_TAP_INPROC, NULL);
    zsock_wait (proxy);
    zstr_sendx (proxy, "BACKEND", "XPUB", endpoint, NULL);
    zsock_wait (proxy);
    return proxy;
}

//  Each connection is a descriptor: take the hard limit on open files (the
//  soft one is often 1024), and say so when [limits] max_connections cannot
//  be reached under it
static void
s_raise_file_limit (const chat_config_t *cfg)
{
    struct rlimit limit;
    if (getrlimit (RLIMIT_NOFILE, &limit) != 0)
        return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        if (setrlimit (RLIMIT_NOFILE, &limit) != 0)
            getrlimit (RLIMIT_NOFILE, &limit);
    }
    //  About 100 descriptors go to ZeroMQ, the database and the listener
    if (limit.rlim_cur != RLIM_INFINITY && (rlim_t) cfg->limits_max_connections + 100 > limit.rlim_cur)
        zsys_warning ("chatd: [limits] max_connections is %d but this process may open only %lu files:"
                      " connections past about %lu will fail", cfg->limits_max_connections,
                      (unsigned long) limit.rlim_cur, (unsigned long) limit.rlim_cur - 100);
}

static void
s_stop (zactor_t **actors)
{
    for (size_t i = 0; i < ACTOR_COUNT; i++)
        zactor_destroy (&actors [s_stop_order [i]]);
}

int
main (int argc, char *argv [])
{
    const char *config_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "-c") && i + 1 < argc)
            config_file = argv [++i];
        else {
            s_usage ();
            return streq (argv [i], "-h") || streq (argv [i], "--help") ? 0 : 2;
        }
    }
    chat_config_t cfg;
    char error [512] = "";
    if (chat_config_load (&cfg, config_file, error, sizeof error) != 0) {
        fprintf (stderr, "chatd: %s\n", error);
        return 1;
    }

    //  Signals are taken by this thread alone, with sigwait; every actor
    //  thread inherits the mask and is stopped by $TERM, never by a signal
    zsys_handler_set (NULL);
    signal (SIGPIPE, SIG_IGN);
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    zsys_init ();
    zsys_set_logident ("chatd");
    s_raise_file_limit (&cfg);

    //  [server] log_level: info and debug announce start and stop
    bool verbose = streq (cfg.server_log_level, "info") || streq (cfg.server_log_level, "debug");
    zactor_t *tap = *cfg.server_tap ? s_tap_proxy_new (cfg.server_tap) : NULL;
    zactor_t *actors [ACTOR_COUNT] = { NULL };
    int rc = 0;
    for (size_t i = 0; i < ACTOR_COUNT && rc == 0; i++) {
        actors [i] = zactor_new (s_start_order [i].fn, &cfg);
        if (chat_actor_started (actors [i], error, sizeof error) != 0) {
            fprintf (stderr, "chatd: %s\n", error);
            rc = 1;
        }
    }
    if (rc == 0) {
        if (verbose)
            zsys_info ("chatd: listening on http://%s:%d, storage %s%s%s", cfg.server_bind,
                   cfg.server_port, cfg.storage_backend, *cfg.server_tap ? ", tap " : "", cfg.server_tap);
        int signal_number = 0;
        sigwait (&signals, &signal_number);
        if (verbose)
            zsys_info ("chatd: %s received, stopping", strsignal (signal_number));
    }
    s_stop (actors);
    zactor_destroy (&tap);
    if (rc == 0 && verbose)
        zsys_info ("chatd: stopped");
    zsys_shutdown ();
    return rc;
}
