/* http.c — routes, request bodies and the suspend/resume dance with the batcher.
 *
 * Owns the libmicrohttpd daemon (a thread pool polling with epoll, or poll where
 * epoll is missing), the listening socket and one http_req per request in flight.
 * Everything here runs on libmicrohttpd's pool threads, except on_job_done(),
 * which a worker thread calls, and the start/quiesce/drain/stop calls of main.
 *
 * A classify request goes: first call (headers) -> check Content-Type and
 * Content-Length; body calls -> append, refusing to keep anything past
 * max_body_bytes; final call -> proto parses and validates into a tensor, the
 * connection is suspended, and only then is the job submitted, so the worker's
 * resume can never come before the suspend.  When the worker finishes, it resumes
 * the connection; libmicrohttpd calls the handler again, which formats the answer.
 * Every other request is answered once fully received (an answer queued before
 * that makes libmicrohttpd close the connection), unless it comes with a body
 * nobody asked for, which is then refused without being read.
 *
 * Lifetime of a job: the request and the batcher each hold a reference.  The
 * request lets go after answering, or in on_completed() if the connection ended
 * before that, cancelling the job first so no worker calls back into a freed
 * request.  A suspended connection is never closed by libmicrohttpd, so a request
 * with a queued or running job always outlives the callback that resumes it.
 *
 * It must never block a pool thread on the queue, never answer without a JSON
 * body and Content-Type: application/json, never log bodies, and never call
 * MHD_stop_daemon while a connection is suspended (main drains the queues first).
 */
#include <config.h>

#include "daemon/http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "proto/proto.h"

/* Idle keep-alive connections and stalled uploads are closed after this.  It does
 * not apply while a request waits for a worker (suspended connections do not time
 * out; the batcher's request_timeout_ms does). */
#define HTTP_IDLE_TIMEOUT_S 60

/* A body buffer starts at most this big and doubles as data arrives. */
#define HTTP_BODY_FIRST_ALLOC (256 * 1024)

/* The statuses this API answers with; spelled out because libmicrohttpd renamed
 * some of its macros (413, 422) between the versions configure accepts. */
enum {
    HTTP_OK = 200,
    HTTP_NOT_FOUND = 404,
    HTTP_METHOD_NOT_ALLOWED = 405,
    HTTP_CONTENT_TOO_LARGE = 413,
    HTTP_UNSUPPORTED_MEDIA_TYPE = 415,
    HTTP_INTERNAL_SERVER_ERROR = 500,
    HTTP_SERVICE_UNAVAILABLE = 503,
};

struct http_server {
    struct MHD_Daemon *mhd;
    registry *reg;
    int listen_fd;
    size_t max_body;
    int max_images;
    int request_timeout_ms;
    atomic_int in_flight;   /* requests between first call and on_completed */
    atomic_bool draining;
    char address[CONFIG_HOST_MAX + 16];
};

typedef struct http_req {
    http_server *srv;
    struct MHD_Connection *conn;
    registry_model *model;  /* classify requests only */
    char *body;             /* classify body so far, NUL-terminated */
    size_t len, cap;
    unsigned long long received; /* body bytes seen, kept or not */
    bool too_large;
    batcher_job *job;       /* set while suspended on the batcher */
    proto_form form;
    int top_k;
    int deferred_status;    /* an answer decided while suspended (queue full) */
    bool deferred_retry;
    char deferred_msg[256];
    const char *method, *url; /* libmicrohttpd's, valid for the request; for logs */
    struct timespec t0;
} http_req;

static const char ALLOW_GET[] = "GET, HEAD";
static const char ALLOW_POST[] = "POST";

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- responses -------------------------------------------------------------- */

typedef struct reply_opts {
    const char *allow;  /* Allow header for 405 */
    bool retry_after;   /* Retry-After: 1 for 503 */
} reply_opts;

/* Queues body (malloc'd JSON, taken over; NULL means formatting ran out of memory). */
static enum MHD_Result reply(http_req *req, unsigned status, char *body, reply_opts o)
{
    static const char oom[] = "{\"error\":\"out of memory formatting the response\"}";
    struct MHD_Response *r;
    if (body != NULL) {
        r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
        if (r == NULL)
            free(body);
    } else {
        status = HTTP_INTERNAL_SERVER_ERROR;
        r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (o.allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, o.allow);
    if (o.retry_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    /* While draining, let keep-alive clients go after this answer. */
    if (atomic_load(&req->srv->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(req->conn, status, r);
    MHD_destroy_response(r);
    log_debug("%.16s %.128s -> %u in %.1f ms", req->method, req->url, status,
              ms_since(&req->t0));
    return ret;
}

__attribute__((format(printf, 4, 5))) static enum MHD_Result
reply_error(http_req *req, unsigned status, reply_opts o, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply(req, status, proto_format_error(msg), o);
}

static const reply_opts NONE = {0};

/* ---- routes ------------------------------------------------------------------- */

static bool is_get(const char *method)
{
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

static enum MHD_Result wrong_method(http_req *req, const char *method, const char *url,
                                    const char *allow)
{
    return reply_error(req, HTTP_METHOD_NOT_ALLOWED, (reply_opts){.allow = allow},
                       "method %.16s is not allowed on %.128s; use %s", method, url, allow);
}

static enum MHD_Result route_models(http_req *req)
{
    registry *reg = req->srv->reg;
    int n = registry_count(reg);
    proto_model_info *infos = calloc((size_t)(n > 0 ? n : 1), sizeof *infos);
    if (infos == NULL)
        return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);
    for (int i = 0; i < n; i++)
        registry_model_info(registry_at(reg, i), &infos[i]);
    char *body = proto_format_models(infos, n);
    free(infos);
    return reply(req, HTTP_OK, body, NONE);
}

static bool content_type_is_json(const char *ct)
{
    /* "application/json", optionally followed by parameters ("; charset=utf-8"). */
    while (*ct == ' ' || *ct == '\t')
        ct++;
    static const char json[] = "application/json";
    if (strncasecmp(ct, json, sizeof json - 1) != 0)
        return false;
    ct += sizeof json - 1;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Headers of POST /v1/models/{name}/classify are in: decide now what can be. */
static enum MHD_Result classify_begin(http_req *req, registry_model *m)
{
    http_server *s = req->srv;
    struct MHD_Connection *c = req->conn;
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct != NULL && !content_type_is_json(ct))
        return reply_error(req, HTTP_UNSUPPORTED_MEDIA_TYPE, NONE,
                           "Content-Type must be application/json, got '%.64s'", ct);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    unsigned long long declared = 0;
    if (cl != NULL) {
        char *end;
        errno = 0;
        declared = strtoull(cl, &end, 10);
        /* libmicrohttpd has already refused a malformed Content-Length. */
        if (errno == 0 && *end == '\0' && declared > s->max_body)
            return reply_error(req, HTTP_CONTENT_TOO_LARGE, NONE,
                               "body of %llu bytes is over the limit of %zu bytes "
                               "(max_body_bytes); send fewer or smaller images",
                               declared, s->max_body);
    }
    if (!registry_model_ready(m)) {
        if (atomic_load(&s->draining))
            return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                               "the server is shutting down");
        return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                           "model %s is still loading; retry when /v2/health/ready returns 200",
                           m->name);
    }
    req->model = m;
    if (declared > 0) {
        /* Not the whole declared size up front: a client that announces 8 MiB and
         * stalls should not hold 8 MiB.  The buffer grows as bytes arrive. */
        size_t cap = (size_t)declared + 1 < HTTP_BODY_FIRST_ALLOC ? (size_t)declared + 1
                                                                  : HTTP_BODY_FIRST_ALLOC;
        req->body = malloc(cap);
        if (req->body == NULL)
            return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);
        req->cap = cap;
    }
    return MHD_YES;
}

static const char MODELS_PREFIX[] = "/v1/models/";

/* The model named by the len bytes at name (a URL segment), or NULL. */
static registry_model *find_model(http_server *s, const char *name, size_t len)
{
    char buf[CONFIG_NAME_MAX];
    if (len == 0 || len >= sizeof buf)
        return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return registry_find(s->reg, buf);
}

/* The model of POST /v1/models/{name}/classify, or NULL for any other request. */
static registry_model *classify_target(http_server *s, const char *url, const char *method)
{
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0 ||
        strncmp(url, MODELS_PREFIX, sizeof MODELS_PREFIX - 1) != 0)
        return NULL;
    const char *name = url + sizeof MODELS_PREFIX - 1;
    const char *slash = strchr(name, '/');
    if (slash == NULL || strcmp(slash, "/classify") != 0)
        return NULL;
    return find_model(s, name, (size_t)(slash - name));
}

static bool has_body(struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    return (cl != NULL && strcmp(cl, "0") != 0) ||
           MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* Answers every request but a classify of a known model. */
static enum MHD_Result route(http_req *req, const char *url, const char *method)
{
    http_server *s = req->srv;
    bool get = is_get(method);

    if (strcmp(url, "/v2/health/live") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return reply(req, HTTP_OK, proto_format_status("live"), NONE);
    }
    if (strcmp(url, "/v2/health/ready") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        if (atomic_load(&s->draining))
            return reply_error(req, HTTP_SERVICE_UNAVAILABLE, NONE,
                               "the server is shutting down");
        if (!registry_ready(s->reg))
            return reply_error(req, HTTP_SERVICE_UNAVAILABLE, NONE,
                               "models are still loading; GET /v1/models shows which");
        return reply(req, HTTP_OK, proto_format_status("ready"), NONE);
    }
    if (strcmp(url, "/v1/models") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return route_models(req);
    }
    if (strncmp(url, MODELS_PREFIX, sizeof MODELS_PREFIX - 1) == 0) {
        const char *name = url + sizeof MODELS_PREFIX - 1;
        const char *slash = strchr(name, '/');
        size_t name_len = slash ? (size_t)(slash - name) : strlen(name);
        const char *rest = slash ? slash : "";
        bool classify = strcmp(rest, "/classify") == 0;
        if (rest[0] != '\0' && !classify)
            goto no_route;
        if (classify && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return wrong_method(req, method, url, ALLOW_POST);
        if (!classify && !get)
            return wrong_method(req, method, url, ALLOW_GET);
        registry_model *m = find_model(s, name, name_len);
        if (m == NULL)
            return reply_error(req, HTTP_NOT_FOUND, NONE,
                               "unknown model '%.*s'; GET /v1/models lists the models served here",
                               (int)(name_len < 64 ? name_len : 64), name);
        if (classify) /* classify_target() missed it: cannot happen, but answer */
            return reply_error(req, HTTP_INTERNAL_SERVER_ERROR, NONE, "internal routing error");
        proto_model_info info;
        registry_model_info(m, &info);
        return reply(req, HTTP_OK, proto_format_model(&info), NONE);
    }
no_route:
    return reply_error(req, HTTP_NOT_FOUND, NONE,
                       "no route for %.16s %.128s; routes: GET /v2/health/live, "
                       "GET /v2/health/ready, GET /v1/models, GET /v1/models/{name}, "
                       "POST /v1/models/{name}/classify",
                       method, url);
}

/* ---- classify body, queueing and the answer -------------------------------------- */

static enum MHD_Result classify_body(http_req *req, const char *data, size_t *size)
{
    http_server *s = req->srv;
    size_t n = *size;
    *size = 0;
    req->received += n;
    if (req->too_large || req->received > s->max_body) {
        /* Over the limit (only possible without Content-Length, i.e. chunked):
         * keep nothing more, answer 413 at the end.  A sender that goes on for
         * another max_body_bytes is not worth reading: drop the connection. */
        req->too_large = true;
        free(req->body);
        req->body = NULL;
        req->len = req->cap = 0;
        return req->received > 2ull * s->max_body ? MHD_NO : MHD_YES;
    }
    if (req->len + n + 1 > req->cap) {
        size_t cap = req->cap ? req->cap : 64 * 1024;
        while (cap < req->len + n + 1)
            cap *= 2;
        if (cap > s->max_body + 1)
            cap = s->max_body + 1;
        char *grown = realloc(req->body, cap);
        if (grown == NULL)
            return MHD_NO;
        req->body = grown;
        req->cap = cap;
    }
    memcpy(req->body + req->len, data, n);
    req->len += n;
    req->body[req->len] = '\0';
    return MHD_YES;
}

/* A worker finished (or the queue expired) the job: wake its connection.  Must not
 * touch req after the resume: the request may be answered and freed at once. */
static void on_job_done(batcher_job *job, void *user)
{
    (void)job;
    http_req *req = user;
    MHD_resume_connection(req->conn);
}

static enum MHD_Result classify_submit(http_req *req)
{
    http_server *s = req->srv;
    registry_model *m = req->model;
    if (req->too_large)
        return reply_error(req, HTTP_CONTENT_TOO_LARGE, NONE,
                           "body is over the limit of %zu bytes (max_body_bytes); "
                           "send fewer or smaller images",
                           s->max_body);
    if (!registry_model_ready(m))
        return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                           "model %s is not available: the server is shutting down", m->name);

    proto_classify_req pr;
    proto_error pe;
    int st = proto_parse_classify(req->body ? req->body : "", req->len, &m->md.preproc,
                                  m->md.n_labels, s->max_images, &pr, &pe);
    free(req->body);
    req->body = NULL;
    if (st != 0)
        return reply_error(req, (unsigned)st, NONE, "%s", pe.msg);

    batcher_job *job = batcher_job_new(pr.inputs, pr.n, m->md.n_labels, on_job_done, req);
    pr.inputs = NULL; /* the job owns them now, or freed them */
    if (job == NULL)
        return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);
    req->form = pr.form;
    req->top_k = pr.top_k;

    /* Suspend before submitting: once queued, a worker may resume us at any time,
     * and a resume must not come before the suspend. */
    MHD_suspend_connection(req->conn);
    req->job = job;
    batcher_status bs = batcher_submit(m->batcher, job);
    if (bs != BATCHER_OK) {
        req->job = NULL;
        batcher_job_release(job);
        req->deferred_status = HTTP_SERVICE_UNAVAILABLE;
        req->deferred_retry = true;
        if (bs == BATCHER_FULL)
            snprintf(req->deferred_msg, sizeof req->deferred_msg,
                     "model %s has %d requests waiting (queue_capacity); retry shortly",
                     m->name, m->queue_capacity);
        else
            snprintf(req->deferred_msg, sizeof req->deferred_msg, "model %s: %s", m->name,
                     batcher_status_str(bs));
        MHD_resume_connection(req->conn);
    }
    return MHD_YES;
}

/* Resumed after on_job_done(): turn the job's state into the answer. */
static enum MHD_Result classify_answer(http_req *req)
{
    http_server *s = req->srv;
    registry_model *m = req->model;
    batcher_job *job = req->job;
    req->job = NULL;
    enum MHD_Result ret;
    batcher_job_state st = batcher_job_state_get(job);
    double waited_ms = (double)batcher_job_wait_us(job) / 1e3;

    if (st == BATCHER_JOB_DONE) {
        proto_error pe;
        char *body = proto_format_classify(m->name, req->form, batcher_job_outputs(job),
                                           batcher_job_n(job), m->md.n_labels, req->top_k,
                                           m->md.labels, &pe);
        log_debug("classify %s: %d image(s), queued %.1f ms", m->name, batcher_job_n(job),
                  waited_ms);
        ret = reply(req, HTTP_OK, body, NONE);
    } else if (st == BATCHER_JOB_EXPIRED) {
        log_warn("model %s: request expired after %.0f ms in the queue", m->name, waited_ms);
        ret = reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                          "request waited %.0f ms in model %s's queue, over request_timeout_ms "
                          "(%d): the server is overloaded, retry later",
                          waited_ms, m->name, s->request_timeout_ms);
    } else if (st == BATCHER_JOB_FAILED) {
        ret = reply_error(req, HTTP_INTERNAL_SERVER_ERROR, NONE, "inference failed: %s",
                          batcher_job_error(job));
    } else {
        ret = reply_error(req, HTTP_INTERNAL_SERVER_ERROR, NONE,
                          "internal error: resumed with the job %s", batcher_job_state_str(st));
    }
    batcher_job_release(job);
    return ret;
}

/* ---- libmicrohttpd callbacks -------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **req_cls)
{
    (void)version;
    http_server *s = cls;
    http_req *req = *req_cls;
    if (req == NULL) {
        req = calloc(1, sizeof *req);
        if (req == NULL)
            return MHD_NO;
        req->srv = s;
        req->conn = conn;
        req->method = method;
        req->url = url;
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        *req_cls = req;
        atomic_fetch_add(&s->in_flight, 1);
        /* A classify may be refused on its headers alone (415, 413, 503), before
         * its body is read; everything else is answered when fully received. */
        registry_model *m = classify_target(s, url, method);
        if (m != NULL)
            return classify_begin(req, m);
        return has_body(conn) ? route(req, url, method) : MHD_YES;
    }
    if (req->model == NULL) {
        if (*upload_size > 0) {
            *upload_size = 0; /* a body nobody asked for: read and dropped */
            return MHD_YES;
        }
        return route(req, url, method);
    }
    if (*upload_size > 0)
        return classify_body(req, upload_data, upload_size);
    if (req->job != NULL)
        return classify_answer(req);
    if (req->deferred_status != 0)
        return reply_error(req, (unsigned)req->deferred_status,
                           (reply_opts){.retry_after = req->deferred_retry}, "%s",
                           req->deferred_msg);
    return classify_submit(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    http_server *s = cls;
    http_req *req = *req_cls;
    if (req == NULL)
        return;
    if (req->job != NULL) {
        /* Ended before the answer went out: the worker must not call back. */
        batcher_job_state prev = batcher_cancel(req->job);
        log_debug("request ended (code %d) with its job %s", (int)toe,
                  batcher_job_state_str(prev));
        batcher_job_release(req->job);
    } else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        log_debug("request ended (code %d) before an answer", (int)toe);
    }
    free(req->body);
    free(req);
    *req_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warn("libmicrohttpd: %s", msg);
}

/* ---- start and stop ------------------------------------------------------------- */

/* Our own listening socket, so a bind failure gets a clear message. */
static int open_listener(const config *cfg, int *fd_out, int *family, char *err, size_t errlen)
{
    char port[8];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int gai = getaddrinfo(cfg->host, port, &hints, &res);
    if (gai != 0)
        return log_errbuf(err, errlen, "cannot resolve listen address '%s': %s", cfg->host,
                    gai_strerror(gai));
    int saved = 0;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0) {
            *fd_out = fd;
            *family = ai->ai_family;
            freeaddrinfo(res);
            return 0;
        }
        saved = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return log_errbuf(err, errlen, "cannot listen on %s: %s", cfg->listen, strerror(saved));
}

int http_start(http_server **out, const config *cfg, registry *reg, char *err, size_t errlen)
{
    *out = NULL;
    http_server *s = calloc(1, sizeof *s);
    if (s == NULL)
        return log_errbuf(err, errlen, "out of memory");
    s->reg = reg;
    s->max_body = (size_t)cfg->max_body_bytes;
    s->max_images = cfg->max_images_per_request;
    s->request_timeout_ms = cfg->request_timeout_ms;
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->draining, false);
    snprintf(s->address, sizeof s->address, "%s", cfg->listen);

    int family = AF_INET;
    if (open_listener(cfg, &s->listen_fd, &family, err, errlen) != 0) {
        free(s);
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    flags |= MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES ? MHD_USE_EPOLL
                                                                     : MHD_USE_POLL;
    if (family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* One HTTP thread means no pool at all: libmicrohttpd warns about a pool of 1. */
    struct MHD_OptionItem pool[2] = {{MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}};
    if (cfg->http_threads > 1)
        pool[0] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads, NULL};
    /* The logger goes first, or libmicrohttpd logs the options before it itself. */
    s->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)s->listen_fd,
        MHD_OPTION_ARRAY, pool,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)HTTP_IDLE_TIMEOUT_S,
        MHD_OPTION_END);
    if (s->mhd == NULL) {
        close(s->listen_fd);
        free(s);
        return log_errbuf(err, errlen, "cannot start the HTTP server on %s (libmicrohttpd refused; "
                                 "see the log above)",
                    cfg->listen);
    }
    *out = s;
    return 0;
}

const char *http_address(const http_server *h) { return h->address; }

void http_quiesce(http_server *h)
{
    if (h == NULL || atomic_exchange(&h->draining, true))
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->mhd);
    /* After quiescing, the listening socket is ours to close. */
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

bool http_drain(http_server *h, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load(&h->in_flight) > 0) {
        if (ms_since(&t0) >= timeout_ms)
            return false;
        struct timespec pause = {0, 10 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    return true;
}

void http_stop(http_server *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->mhd);
    free(h);
}
