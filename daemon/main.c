/* main.c — modeld: wiring only.
 *
 * Reads the settings (exit 2 on any bad one), decides the BLAS thread budget once,
 * reads the model directories, starts HTTP (so /v2/health/live answers while the
 * weights load), loads the models and their workers, then sleeps until a signal.
 * SIGHUP reloads: the config is read again and every model loaded into a second
 * registry while the first keeps serving; then new requests go to the new one,
 * and the old one is freed once the last request that started on it is answered
 * (checked every SIGNAL_POLL_MS).  A reload that fails anywhere keeps the old
 * registry serving and logs why.  Settings of the HTTP server itself (listen,
 * http_threads, body and request limits) and blas_threads take a restart.
 * SIGTERM/SIGINT: stop accepting, give requests being uploaded a moment to be
 * queued, close the queues and run everything in them (every queued request is
 * answered), stop HTTP, free, exit 0.
 *
 * Signals use a self-pipe: the handler only writes one byte, and this thread does
 * the work.  (sigwait would not do: OpenBLAS starts its threads before main with
 * signals unblocked, and any of them could take the signal.)
 *
 * --check-config stops after loading: it builds the registry, loads every model and
 * frees it again without starting HTTP (check_config).
 *
 * This is the only file that exits on errors, and only before serving starts.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/config.h"
#include "daemon/http.h"
#include "daemon/log.h"
#include "daemon/registry.h"
#include "engine/engine.h"

enum { EXIT_STARTUP = 1, EXIT_USAGE = 2 };

/* How long shutdown waits for requests that are not queued yet (being uploaded or
 * parsed) before closing the queues, and for answers to go out afterwards. */
#define SHUTDOWN_GRACE_MS 2000

/* How often the main thread looks for retired registries to free. */
#define SIGNAL_POLL_MS 100

/* Registries replaced by a reload, kept until no request holds them. */
#define MAX_RETIRED 16

static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    /* Full pipe: a byte is already waiting, which is all main needs. */
    ssize_t w = write(signal_pipe[1], &b, 1);
    (void)w;
    errno = saved;
}

static int install_signals(void)
{
    if (pipe(signal_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++)
        fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0 ||
        sigaction(SIGHUP, &sa, NULL) != 0)
        return -1;
    /* A client that hangs up mid-answer must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* The next signal, or 0 after timeout_ms without one. */
static int wait_for_signal(int timeout_ms)
{
    struct pollfd p = {.fd = signal_pipe[0], .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    if (n == 0 || (n < 0 && errno == EINTR))
        return 0;
    unsigned char b = 0;
    for (;;) {
        ssize_t r = read(signal_pipe[0], &b, 1);
        if (r == 1)
            return b;
        if (r < 0 && errno == EINTR)
            continue;
        return SIGTERM; /* the pipe broke: treat as a request to stop */
    }
}

static void notify_systemd(const char *state)
{
#ifdef HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

typedef struct retired_list {
    registry *r[MAX_RETIRED];
    int n;
} retired_list;

/* Frees the retired registries no request holds any more (all of them if wait). */
static void free_retired(retired_list *ret, bool wait)
{
    int kept = 0;
    for (int i = 0; i < ret->n; i++) {
        registry *r = ret->r[i];
        if (!wait && registry_refs(r) > 0) {
            ret->r[kept++] = r;
            continue;
        }
        registry_shutdown(r); /* drains its queue: every request on it is answered */
        registry_free(r);
        log_info("reload: the previous models are freed");
    }
    ret->n = kept;
}

/* SIGHUP: the new config and models, loaded beside the serving ones, then swapped
 * in.  0, or -1 with the old state still serving. */
static int reload(int argc, char **argv, config *cfg, registry **reg, http_server *http,
                  retired_list *ret)
{
    char err[CONFIG_ERR_MAX];
    if (ret->n == MAX_RETIRED) {
        log_error("reload refused: %d earlier reloads still have requests in flight", ret->n);
        return -1;
    }
    config next_cfg;
    config_action action;
    if (config_from_args(&next_cfg, argc, argv, &action, err, sizeof err) != 0) {
        log_error("reload failed, still serving the previous models: %s", err);
        config_free(&next_cfg);
        return -1;
    }
    if (strcmp(next_cfg.listen, cfg->listen) != 0 || next_cfg.http_threads != cfg->http_threads ||
        next_cfg.max_body_bytes != cfg->max_body_bytes ||
        next_cfg.max_images_per_request != cfg->max_images_per_request ||
        next_cfg.request_timeout_ms != cfg->request_timeout_ms ||
        next_cfg.max_request_timeout_ms != cfg->max_request_timeout_ms ||
        next_cfg.blas_threads != cfg->blas_threads || next_cfg.access_log != cfg->access_log ||
        strcmp(next_cfg.auth_token_file, cfg->auth_token_file) != 0 ||
        next_cfg.auth_open_health != cfg->auth_open_health ||
        next_cfg.auth_open_metrics != cfg->auth_open_metrics)
        log_warn("reload: listen, http_threads, max_body_bytes, max_images_per_request, "
                 "request_timeout_ms, max_request_timeout_ms, blas_threads, access_log and "
                 "auth_* take a restart; their old values stay");
    /* The queue deadline is the HTTP server's too (its 503 message): kept, as warned. */
    next_cfg.request_timeout_ms = cfg->request_timeout_ms;
    if ((long long)next_cfg.max_queue_delay_us >= (long long)next_cfg.request_timeout_ms * 1000) {
        log_error("reload failed, still serving the previous models: max_queue_delay_us (%d) "
                  "must be less than the running request_timeout_ms (%d)",
                  next_cfg.max_queue_delay_us, next_cfg.request_timeout_ms);
        config_free(&next_cfg);
        return -1;
    }
    registry *next = NULL;
    if (registry_create(&next_cfg, *reg, &next, err, sizeof err) != 0 ||
        registry_load(next, err, sizeof err) != 0) {
        log_error("reload failed, still serving the previous models: %s", err);
        registry_free(next);
        config_free(&next_cfg);
        return -1;
    }
    ret->r[ret->n++] = http_swap_registry(http, next);
    *reg = next;
    /* Keep the settings HTTP was started with; take the models'. */
    config old = *cfg;
    *cfg = next_cfg;
    snprintf(cfg->listen, sizeof cfg->listen, "%s", old.listen);
    cfg->http_threads = old.http_threads;
    config_free(&old);
    log_level level;
    if (log_level_parse(cfg->log_level, &level))
        log_set_level(level);
    log_info("reloaded: %d model(s) serving", registry_count(next));
    return 0;
}

/* --check-config: what start-up reads and loads (the settings, each model directory,
 * its weights against config.json and the labels, the token file), loaded and freed
 * again; nothing listens.  0 with "config OK: N models" on stdout, or EXIT_USAGE with
 * the first problem on stderr.  The unit's ExecReload runs it before each SIGHUP. */
static int check_config(const config *cfg)
{
    /* Only problems on stderr: the loads' info lines would bury them. */
    log_level level;
    if (!log_level_parse(cfg->log_level, &level) || level < LOG_LEVEL_WARN)
        log_set_level(LOG_LEVEL_WARN);
    engine_set_blas_threads(1); /* nothing runs a forward pass */
    char err[CONFIG_ERR_MAX];
    if (cfg->auth_token_file[0] != '\0') {
        FILE *f = fopen(cfg->auth_token_file, "r");
        if (f == NULL) {
            fprintf(stderr, "modeld: auth_token_file %s: %s\n", cfg->auth_token_file,
                    strerror(errno));
            return EXIT_USAGE;
        }
        fclose(f);
    }
    registry *reg = NULL;
    if (registry_create(cfg, NULL, &reg, err, sizeof err) != 0 ||
        registry_load(reg, err, sizeof err) != 0) {
        fprintf(stderr, "modeld: %s\n", err);
        registry_free(reg);
        return EXIT_USAGE;
    }
    printf("config OK: %d models\n", registry_count(reg));
    for (int i = 0; i < registry_count(reg); i++) {
        registry_model *m = registry_at(reg, i);
        printf("  %s  %s  %s\n", m->name, model_kind_name(m->md.kind), m->path);
    }
    registry_free(reg);
    return 0;
}

int main(int argc, char **argv)
{
    config cfg;
    config_action action;
    char err[CONFIG_ERR_MAX];
    if (config_from_args(&cfg, argc, argv, &action, err, sizeof err) != 0) {
        fprintf(stderr, "modeld: %s\n", err);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    if (action == CONFIG_ACTION_HELP) {
        config_usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (action == CONFIG_ACTION_VERSION) {
        printf("modeld %s\n", PACKAGE_VERSION);
        config_free(&cfg);
        return 0;
    }
    if (action == CONFIG_ACTION_CHECK) {
        int rc = check_config(&cfg);
        config_free(&cfg);
        return rc;
    }
    log_level level;
    if (log_level_parse(cfg.log_level, &level))
        log_set_level(level);
    if (install_signals() != 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        config_free(&cfg);
        return EXIT_STARTUP;
    }

    /* The one place the thread budget is decided: workers x BLAS threads stays
     * within the cores unless blas_threads says otherwise.  Each worker's engine
     * session sizes its own pool (engine/parallel.h) from the same number; the pool
     * runs only between BLAS calls, so the two never add up. */
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int blas = config_blas_threads(&cfg, cores > 0 ? (int)cores : 1);
    engine_set_blas_threads(blas);
    log_info("modeld %s starting: %ld core(s), %d BLAS thread(s) per forward pass",
             PACKAGE_VERSION, cores, blas);

    registry *reg = NULL;
    if (registry_create(&cfg, NULL, &reg, err, sizeof err) != 0) {
        log_error("%s", err);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    http_server *http = NULL;
    if (http_start(&http, &cfg, reg, err, sizeof err) != 0) {
        log_error("%s", err);
        registry_free(reg);
        config_free(&cfg);
        return EXIT_STARTUP;
    }
    log_info("listening on http://%s (%d HTTP threads)", http_address(http), cfg.http_threads);

    if (registry_load(reg, err, sizeof err) != 0) {
        log_error("%s", err);
        http_quiesce(http);
        registry_shutdown(reg);
        http_drain(http, 1000);
        http_stop(http);
        registry_free(reg);
        config_free(&cfg);
        return EXIT_STARTUP;
    }
    log_info("ready: %d model(s) loaded", registry_count(reg));
    notify_systemd("READY=1");

    retired_list retired = {.n = 0};
    int sig;
    for (;;) {
        sig = wait_for_signal(SIGNAL_POLL_MS);
        free_retired(&retired, false);
        if (sig == SIGHUP) {
            log_info("received SIGHUP: reloading the config and models");
            notify_systemd("RELOADING=1");
            reload(argc, argv, &cfg, &reg, http, &retired);
            notify_systemd("READY=1");
        } else if (sig != 0) {
            break;
        }
    }
    log_info("received %s: finishing requests in flight",
             sig == SIGINT ? "SIGINT" : "SIGTERM");
    notify_systemd("STOPPING=1");
    http_quiesce(http);
    /* A short grace for requests still arriving on open connections to be queued;
     * a client stalled mid-upload does not hold the shutdown longer than this. */
    http_settle(http, SHUTDOWN_GRACE_MS);
    /* Close the queues, run what is queued for up to shutdown_timeout_ms (failing
     * the rest with 503), join the workers: every queued job is answered, so every
     * suspended connection is resumed before MHD_stop_daemon. */
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int dropped = registry_drain(reg, cfg.shutdown_timeout_ms);
    for (int i = 0; i < retired.n; i++) { /* their workers ran meanwhile: what time is left */
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (long)(t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
        dropped += registry_drain(retired.r[i],
                                  spent < cfg.shutdown_timeout_ms
                                      ? (int)(cfg.shutdown_timeout_ms - spent) : 0);
    }
    if (dropped > 0)
        log_warn("%d queued request(s) not run within shutdown_timeout_ms (%d): answered 503",
                 dropped, cfg.shutdown_timeout_ms);
    registry_shutdown(reg);
    for (int i = 0; i < retired.n; i++)
        registry_shutdown(retired.r[i]);
    if (!http_drain(http, SHUTDOWN_GRACE_MS))
        log_warn("connections still busy after %d ms (stalled clients); closing them",
                 SHUTDOWN_GRACE_MS);
    http_stop(http);
    free_retired(&retired, true);
    registry_free(reg);
    config_free(&cfg);
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    log_info("stopped");
    return 0;
}
