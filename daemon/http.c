/* http.c — routes, request bodies and the suspend/resume dance with the batcher.
 *
 * Owns the libmicrohttpd daemon (a thread pool polling with epoll, or poll where
 * epoll is missing), the listening socket and one http_req per request in flight.
 * Everything here runs on libmicrohttpd's pool threads, except on_job_done(),
 * which a worker thread calls, and the start/quiesce/drain/stop calls of main.
 *
 * An inference request (classify on a CNN model, fill-mask or next-sentence on a
 * BERT model; one table of routes below) goes: first call (headers) -> check the
 * route fits the model's kind, Content-Type and Content-Length; body calls ->
 * append, refusing to keep anything past max_body_bytes; final call -> proto parses
 * and validates into native inputs (a tensor, or token ids), which become the job's
 * worker_task, the connection is suspended, and only then is the job submitted, so
 * the worker's resume can never come before the suspend.  When the worker finishes,
 * it resumes the connection; libmicrohttpd calls the handler again, which formats
 * the answer from the task.  Everything per kind is in the parse/format switches
 * of infer_submit() and infer_format(); the queueing around them is shared.
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

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "daemon/log.h"
#include "proto/kserve.h"
#include "proto/openapi.h"
#include "proto/proto.h"

/* Idle keep-alive connections and stalled uploads are closed after this.  It does
 * not apply while a request waits for a worker (suspended connections do not time
 * out; the batcher's request_timeout_ms does). */
#define HTTP_IDLE_TIMEOUT_S 60

/* How often the hang-up watcher looks at the connections suspended on a job: a
 * client that went away has its queued work dropped within about this long. */
#define HTTP_HANGUP_POLL_MS 20

/* The header a request sets its own queue deadline with, in milliseconds. */
#define HTTP_TIMEOUT_HEADER "X-Request-Timeout-Ms"

/* X-Request-Id values taken from clients: at most this long, [A-Za-z0-9._:-]. */
#define HTTP_REQUEST_ID_MAX 128

/* A bearer token file is at most this big. */
#define HTTP_TOKEN_MAX 4096

/* A body buffer starts at most this big and doubles as data arrives. */
#define HTTP_BODY_FIRST_ALLOC (256 * 1024)

/* The statuses this API answers with; spelled out because libmicrohttpd renamed
 * some of its macros (413, 422) between the versions configure accepts. */
enum {
    HTTP_OK = 200,
    HTTP_BAD_REQUEST = 400,
    HTTP_UNAUTHORIZED = 401,
    HTTP_NOT_FOUND = 404,
    HTTP_METHOD_NOT_ALLOWED = 405,
    HTTP_CONTENT_TOO_LARGE = 413,
    HTTP_UNSUPPORTED_MEDIA_TYPE = 415,
    HTTP_UNPROCESSABLE = 422,
    HTTP_INTERNAL_SERVER_ERROR = 500,
    HTTP_SERVICE_UNAVAILABLE = 503,
};

typedef struct http_req http_req;

struct http_server {
    struct MHD_Daemon *mhd;
    pthread_mutex_t reg_mu;     /* guards reg against http_swap_registry */
    registry *reg;              /* the models new requests go to */
    int listen_fd;
    size_t max_body;
    int max_images;
    int request_timeout_ms;
    int max_request_timeout_ms;
    atomic_int in_flight;   /* requests between first call and on_completed */
    atomic_bool draining;
    int quiesced_fd;        /* the listening socket after http_quiesce, closed at stop */
    bool socket_passed;     /* the listening socket is systemd's (socket activation) */
    char *token;            /* bearer token (auth_token_file), NULL: no auth */
    size_t token_len;
    bool open_health, open_metrics, access_log;
    uint64_t id_base;       /* random; request ids are id_base + a counter */
    _Atomic uint64_t next_id;
    char address[CONFIG_HOST_MAX + 16];
    /* Requests suspended on a job, for the hang-up watcher (see watch_hangups). */
    pthread_mutex_t waiting_mu;
    pthread_cond_t waiting_cv;  /* a watched request was let go; or stop */
    http_req *waiting;          /* doubly linked through wprev/wnext */
    int n_waiting;
    bool watcher_stop;
    bool watcher_started;
    pthread_t watcher;
};

/* The inference routes: POST /v1/models/{name}{suffix} on a model of kind. */
typedef enum infer_op {
    INFER_NONE = 0,
    INFER_CLASSIFY,
    INFER_FILL_MASK,
    INFER_NEXT_SENTENCE,
    INFER_GENERATE,
    INFER_V2,           /* Open Inference Protocol: any kind */
} infer_op;

static const char MODELS_PREFIX[] = "/v1/models/";
static const char V2_MODELS_PREFIX[] = "/v2/models/";

static const struct infer_route {
    const char *prefix, *suffix;
    infer_op op;
    model_kind kind;     /* ignored for INFER_V2 */
} INFER_ROUTES[] = {
    {MODELS_PREFIX, "/classify", INFER_CLASSIFY, MODEL_KIND_CNN},
    {MODELS_PREFIX, "/fill-mask", INFER_FILL_MASK, MODEL_KIND_BERT},
    {MODELS_PREFIX, "/next-sentence", INFER_NEXT_SENTENCE, MODEL_KIND_BERT},
    {MODELS_PREFIX, "/generate", INFER_GENERATE, MODEL_KIND_GAN},
    {V2_MODELS_PREFIX, "/infer", INFER_V2, MODEL_KIND_CNN},
};
#define N_INFER_ROUTES (sizeof INFER_ROUTES / sizeof INFER_ROUTES[0])

static const char *infer_op_name(infer_op op)
{
    for (size_t i = 0; i < N_INFER_ROUTES; i++)
        if (INFER_ROUTES[i].op == op)
            return INFER_ROUTES[i].suffix + 1;
    return "request";
}

/* A job's payload: the worker's task first (the worker sees only that), then what
 * the answer is formatted from.  Freed with the job, by whoever lets go last. */
typedef struct infer_task {
    worker_task wt;
    proto_classify_req classify;  /* owns the inputs; form and top_k */
    float *probs;                 /* (N,K) */
    proto_fill_mask_req fill;     /* owns ids, masks, targets */
    engine_bert_seq seq;          /* fill-mask, next-sentence: the one sequence */
    int32_t *top_ids;             /* (n_mask, top_k) */
    float *top_scores;            /* (n_mask, top_k) */
    proto_next_sentence_req pair; /* owns ids, segment ids */
    proto_generate_req gen;       /* owns latents, classes, seeds */
    float *images;                /* (N, C, H, W) generator output */
    /* v2 infer */
    kserve_request v2;            /* the parsed request: ids, requested outputs */
    float *v2_inputs;             /* CNN (N,C,H,W); GAN latents (N, nz) */
    int32_t *v2_classes;          /* GAN: (N) or NULL */
    kserve_bert_batch v2_bert;    /* BERT: the sequences */
    float *logits;                /* CNN (N,K); BERT (masks, V) */
    int v2_n;                     /* CNN, GAN: rows */
} infer_task;

static void infer_task_free(void *p)
{
    infer_task *t = p;
    if (t == NULL)
        return;
    proto_classify_req_free(&t->classify);
    free(t->probs);
    proto_fill_mask_req_free(&t->fill);
    free(t->top_ids);
    free(t->top_scores);
    proto_next_sentence_req_free(&t->pair);
    proto_generate_req_free(&t->gen);
    free(t->images);
    kserve_request_free(&t->v2);
    free(t->v2_inputs);
    free(t->v2_classes);
    kserve_bert_batch_free(&t->v2_bert);
    free(t->logits);
    free(t);
}

struct http_req {
    http_server *srv;
    registry *reg;          /* the registry it started with, referenced until it ends */
    struct MHD_Connection *conn;
    int fd;                 /* the connection's socket, for the hang-up watcher */
    registry_model *target; /* the model of an inference route, even if refused: metrics */
    bool counted;           /* its outcome is in target's metrics */
    int outcome;            /* metrics_outcome to count instead of the status's; -1: none */
    registry_model *model;  /* inference requests only */
    uint64_t timeout_us;    /* its own queue deadline (X-Request-Timeout-Ms); 0: default */
    infer_op op;
    char *body;             /* inference body so far, NUL-terminated */
    size_t len, cap;
    unsigned long long received; /* body bytes seen, kept or not */
    bool too_large;
    bool want_png;          /* generate: Accept: image/png, one PNG as the body */
    size_t v2_header_len;   /* v2 infer: Inference-Header-Content-Length; 0: none */
    bool v2_binary;         /* v2 infer: the body has binary tensor data */
    batcher_job *job;       /* set while suspended on the batcher */
    int deferred_status;    /* an answer decided while suspended (queue full) */
    bool deferred_retry;
    char deferred_msg[256];
    const char *method, *url; /* libmicrohttpd's, valid for the request; for logs */
    struct timespec t0;
    char id[HTTP_REQUEST_ID_MAX + 1]; /* X-Request-Id: the client's, or made here */
    uint64_t queue_us, compute_us;    /* for the access log, once a job ran */
    int batch_rows;
    /* Guarded by srv->waiting_mu. */
    http_req *wprev, *wnext;
    bool waiting;           /* in srv->waiting */
    bool watched;           /* the watcher is looking at it: it must not be freed */
};

static const char ALLOW_GET[] = "GET, HEAD";
static const char ALLOW_POST[] = "POST";

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- metrics ------------------------------------------------------------------ */

/* What an answer's status says about how the request ended. */
static metrics_outcome outcome_of_status(unsigned status)
{
    if (status < 400)
        return METRICS_OK;
    if (status == HTTP_SERVICE_UNAVAILABLE)
        return METRICS_REJECTED;
    return status < 500 ? METRICS_CLIENT_ERROR : METRICS_FAILED;
}

/* Counts the request's outcome once, for the model it was sent to. */
static void count_outcome(http_req *req, unsigned status)
{
    if (req->target == NULL || req->counted)
        return;
    req->counted = true;
    metrics_count(req->target->metrics, req->outcome >= 0 ? (metrics_outcome)req->outcome
                                                            : outcome_of_status(status));
}

/* ---- responses -------------------------------------------------------------- */

typedef struct reply_opts {
    const char *allow;  /* Allow header for 405 */
    bool retry_after;   /* Retry-After: 1 for 503 */
    bool challenge;     /* WWW-Authenticate for 401 */
    const char *content_type; /* NULL: application/json */
    size_t inference_header_len; /* v2 binary answer: the JSON part's length */
} reply_opts;

/* A copy of s safe for a log line: control bytes (libmicrohttpd unescapes %0a in
 * URLs) and anything outside printable ASCII become '?'. */
static void printable(char *dst, size_t n, const char *s)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i + 1 < n; i++)
        dst[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    dst[i] = '\0';
}

/* What every answer carries and every answer does: the request id, Connection:
 * close while draining; queued, counted, logged. */
static enum MHD_Result send_response(http_req *req, unsigned status, struct MHD_Response *r)
{
    MHD_add_response_header(r, "X-Request-Id", req->id);
    /* While draining, let keep-alive clients go after this answer. */
    if (atomic_load(&req->srv->draining))
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(req->conn, status, r);
    MHD_destroy_response(r);
    count_outcome(req, status);
    char path[160], method[17];
    printable(path, sizeof path, req->url);
    printable(method, sizeof method, req->method);
    if (req->srv->access_log) {
        log_info("access id=%s method=%s path=%s model=%s status=%u ms=%.3f queue_ms=%.3f "
                 "compute_ms=%.3f batch=%d",
                 req->id, method, path, req->target ? req->target->name : "-", status,
                 ms_since(&req->t0), (double)req->queue_us / 1e3, (double)req->compute_us / 1e3,
                 req->batch_rows);
    } else {
        log_debug("%s %s -> %u in %.1f ms", method, path, status, ms_since(&req->t0));
    }
    return ret;
}

/* Queues body (malloc'd, len bytes, taken over; NULL means formatting ran out of
 * memory). */
static enum MHD_Result reply_len(http_req *req, unsigned status, char *body, size_t len,
                                 reply_opts o)
{
    static const char oom[] = "{\"error\":\"out of memory formatting the response\"}";
    struct MHD_Response *r;
    if (body != NULL) {
        r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (r == NULL)
            free(body);
    } else {
        status = HTTP_INTERNAL_SERVER_ERROR;
        r = MHD_create_response_from_buffer(sizeof oom - 1, (void *)oom, MHD_RESPMEM_PERSISTENT);
    }
    if (r == NULL)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            o.content_type && body ? o.content_type : "application/json");
    if (o.allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, o.allow);
    if (o.retry_after)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    if (o.challenge)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"modeld\"");
    if (o.inference_header_len > 0 && body != NULL) {
        char n[24];
        snprintf(n, sizeof n, "%zu", o.inference_header_len);
        MHD_add_response_header(r, "Inference-Header-Content-Length", n);
    }
    return send_response(req, status, r);
}

/* Queues body: malloc'd NUL-terminated text, taken over; NULL: out of memory. */
static enum MHD_Result reply(http_req *req, unsigned status, char *body, reply_opts o)
{
    return reply_len(req, status, body, body ? strlen(body) : 0, o);
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
    registry *reg = req->reg;
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

static enum MHD_Result route_metrics(http_req *req)
{
    registry *reg = req->reg;
    int n = registry_count(reg);
    metrics_model_view *views = calloc((size_t)(n > 0 ? n : 1), sizeof *views);
    if (views == NULL)
        return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);
    for (int i = 0; i < n; i++)
        registry_metrics_view(registry_at(reg, i), &views[i]);
    char *text = metrics_format(views, n);
    free(views);
    return reply(req, HTTP_OK, text,
                 (reply_opts){.content_type = "text/plain; version=0.0.4; charset=utf-8"});
}

/* Is the media type ct (parameters such as "; charset=utf-8" allowed) `type`? */
static bool media_type_is(const char *ct, const char *type)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    const size_t n = strlen(type);
    if (strncasecmp(ct, type, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* The body types taken as JSON: application/json, and the form type that `curl -d`
 * sends when no -H 'Content-Type' is given, so the bare curl of the docs works (its
 * body is parsed as JSON all the same; real form encoding fails as invalid JSON). */
static bool content_type_is_json(const char *ct)
{
    return media_type_is(ct, "application/json") ||
           media_type_is(ct, "application/x-www-form-urlencoded");
}

/* "POST /v1/models/NAME/classify" or the BERT routes: where a model of kind goes. */
static void kind_routes(model_kind kind, const char *name, char *buf, size_t len)
{
    if (kind == MODEL_KIND_BERT)
        snprintf(buf, len, "POST /v1/models/%s/fill-mask or POST /v1/models/%s/next-sentence",
                 name, name);
    else if (kind == MODEL_KIND_GAN)
        snprintf(buf, len, "POST /v1/models/%s/generate", name);
    else
        snprintf(buf, len, "POST /v1/models/%s/classify", name);
}

/* What to do about a body over max_body_bytes, per route. */
static const char *body_hint(infer_op op)
{
    switch (op) {
    case INFER_CLASSIFY: return "send fewer or smaller images";
    case INFER_GENERATE: return "send fewer latent vectors";
    case INFER_V2: return "send fewer rows per request";
    default: return "send a shorter text";
    }
}

/* Does the Accept header ask for a PNG rather than JSON?  Only image/png, or any
 * image type, named before any JSON type does: curl's and browsers' catch-all
 * default gets JSON. */
static bool accepts_png_first(const char *accept)
{
    if (accept == NULL)
        return false;
    const char *png = strstr(accept, "image/png");
    if (png == NULL)
        png = strstr(accept, "image/*");
    const char *json = strstr(accept, "application/json");
    return png != NULL && (json == NULL || png < json);
}

/* Headers of an inference request are in: decide now what can be. */
static enum MHD_Result infer_begin(http_req *req, registry_model *m, const struct infer_route *rt)
{
    http_server *s = req->srv;
    struct MHD_Connection *c = req->conn;
    if (rt->op != INFER_V2 && m->md.kind != rt->kind) {
        char routes[2 * CONFIG_NAME_MAX + 80];
        kind_routes(m->md.kind, m->name, routes, sizeof routes);
        return reply_error(req, HTTP_NOT_FOUND, NONE,
                           "model %s is a %s model: %s takes %s models only; use %s", m->name,
                           model_kind_name(m->md.kind), rt->suffix + 1, model_kind_name(rt->kind),
                           routes);
    }
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *ihcl = rt->op == INFER_V2 ? MHD_lookup_connection_value(
                                                c, MHD_HEADER_KIND, "Inference-Header-Content-Length")
                                          : NULL;
    if (ihcl != NULL) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(ihcl, &end, 10);
        if (errno != 0 || end == ihcl || *end != '\0' || v > s->max_body)
            return reply_error(req, HTTP_BAD_REQUEST, NONE,
                               "Inference-Header-Content-Length must be the byte length of the "
                               "JSON part of the body, got '%.32s'",
                               ihcl);
        req->v2_header_len = (size_t)v;
        req->v2_binary = true;
    }
    /* Binary tensor bodies are sent as octet-stream by some clients. */
    if (ct != NULL && !content_type_is_json(ct) &&
        !(req->v2_binary && media_type_is(ct, "application/octet-stream")))
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
                               "(max_body_bytes); %s",
                               declared, s->max_body,
                               body_hint(rt->op));
    }
    if (!registry_model_ready(m)) {
        if (atomic_load(&s->draining))
            return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                               "the server is shutting down");
        return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                           "model %s is still loading; retry when /v2/health/ready returns 200",
                           m->name);
    }
    /* Only known once loaded (published by ready, read above). */
    if (rt->op == INFER_NEXT_SENTENCE && !m->has_nsp)
        return reply_error(req, HTTP_UNPROCESSABLE, NONE,
                           "model %s has no next-sentence head (its checkpoint lacks "
                           "cls.seq_relationship); POST /v1/models/%s/fill-mask works",
                           m->name, m->name);
    const char *tmo = MHD_lookup_connection_value(c, MHD_HEADER_KIND, HTTP_TIMEOUT_HEADER);
    if (tmo != NULL) {
        char *end;
        errno = 0;
        long long ms = strtoll(tmo, &end, 10);
        if (errno != 0 || end == tmo || *end != '\0' || ms < 1 || ms > s->max_request_timeout_ms)
            return reply_error(req, HTTP_BAD_REQUEST, NONE,
                               HTTP_TIMEOUT_HEADER " must be a whole number of milliseconds from "
                               "1 to %d (max_request_timeout_ms), got '%.32s'",
                               s->max_request_timeout_ms, tmo);
        req->timeout_us = (uint64_t)ms * 1000u;
    }
    req->model = m;
    req->op = rt->op;
    req->want_png = rt->op == INFER_GENERATE &&
                    accepts_png_first(MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                                  MHD_HTTP_HEADER_ACCEPT));
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


/* The model named by the len bytes at name (a URL segment), or NULL. */
static registry_model *find_model(registry *reg, const char *name, size_t len)
{
    char buf[CONFIG_NAME_MAX];
    if (len == 0 || len >= sizeof buf)
        return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return registry_find(reg, buf);
}

/* The route of a URL tail ("/classify") under prefix, or NULL. */
static const struct infer_route *infer_route_of(const char *prefix, const char *rest)
{
    for (size_t i = 0; i < N_INFER_ROUTES; i++)
        if (INFER_ROUTES[i].prefix == prefix && strcmp(rest, INFER_ROUTES[i].suffix) == 0)
            return &INFER_ROUTES[i];
    return NULL;
}

/* The model of POST /v1/models/{name}/{classify,fill-mask,...} (of any kind:
 * infer_begin() refuses a mismatch) or POST /v2/models/{name}/infer, or NULL for
 * any other request. */
static registry_model *infer_target(registry *reg, const char *url, const char *method,
                                    const struct infer_route **rt)
{
    if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
        return NULL;
    const char *prefix = strncmp(url, MODELS_PREFIX, sizeof MODELS_PREFIX - 1) == 0 ? MODELS_PREFIX
                         : strncmp(url, V2_MODELS_PREFIX, sizeof V2_MODELS_PREFIX - 1) == 0
                             ? V2_MODELS_PREFIX
                             : NULL;
    if (prefix == NULL)
        return NULL;
    const char *name = url + strlen(prefix);
    const char *slash = strchr(name, '/');
    if (slash == NULL || (*rt = infer_route_of(prefix, slash)) == NULL)
        return NULL;
    return find_model(reg, name, (size_t)(slash - name));
}

/* GET /v2/models/{name}[/ready|/config], POST .../infer on an unknown model. */
static enum MHD_Result route_v2_model(http_req *req, const char *url, const char *method)
{
    const char *name = url + sizeof V2_MODELS_PREFIX - 1;
    const char *slash = strchr(name, '/');
    size_t name_len = slash ? (size_t)(slash - name) : strlen(name);
    const char *rest = slash ? slash : "";
    bool infer = strcmp(rest, "/infer") == 0;
    if (!infer && rest[0] != '\0' && strcmp(rest, "/ready") != 0 && strcmp(rest, "/config") != 0)
        return reply_error(req, HTTP_NOT_FOUND, NONE,
                           "no route for %.16s %.128s; a model's v2 routes are GET "
                           "/v2/models/{name}, /ready, /config and POST /v2/models/{name}/infer",
                           method, url);
    if (infer ? strcmp(method, MHD_HTTP_METHOD_POST) != 0 : !is_get(method))
        return wrong_method(req, method, url, infer ? ALLOW_POST : ALLOW_GET);
    registry_model *m = find_model(req->reg, name, name_len);
    if (m == NULL || infer) /* a known model's infer went to infer_begin() */
        return reply_error(req, HTTP_NOT_FOUND, NONE,
                           "unknown model '%.*s'; GET /v1/models lists the models served here",
                           (int)(name_len < 64 ? name_len : 64), name);
    proto_model_info info;
    registry_model_info(m, &info);
    kserve_model_io io;
    kserve_describe(&info, &io);
    if (strcmp(rest, "/ready") == 0)
        return reply(req, info.ready ? HTTP_OK : HTTP_SERVICE_UNAVAILABLE,
                     kserve_format_ready(m->name, info.ready), NONE);
    if (strcmp(rest, "/config") == 0)
        return reply(req, HTTP_OK,
                     kserve_format_config(m->name, &io, m->max_batch, m->max_queue_delay_us),
                     NONE);
    return reply(req, HTTP_OK, kserve_format_metadata(m->name, &io), NONE);
}

static bool has_body(struct MHD_Connection *c)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    return (cl != NULL && strcmp(cl, "0") != 0) ||
           MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                       MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
}

/* Answers every request but an inference request on a known model. */
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
        if (!registry_ready(req->reg))
            return reply_error(req, HTTP_SERVICE_UNAVAILABLE, NONE,
                               "models are still loading; GET /v1/models shows which");
        return reply(req, HTTP_OK, proto_format_status("ready"), NONE);
    }
    if (strcmp(url, "/v1/models") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return route_models(req);
    }
    if (strcmp(url, "/metrics") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return route_metrics(req);
    }
    if (strcmp(url, "/v1/openapi.json") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return reply(req, HTTP_OK, strdup(proto_openapi_json), NONE);
    }
    if (strcmp(url, "/v2") == 0) {
        if (!get)
            return wrong_method(req, method, url, ALLOW_GET);
        return reply(req, HTTP_OK, kserve_format_server(PACKAGE_VERSION), NONE);
    }
    if (strncmp(url, V2_MODELS_PREFIX, sizeof V2_MODELS_PREFIX - 1) == 0)
        return route_v2_model(req, url, method);
    if (strncmp(url, MODELS_PREFIX, sizeof MODELS_PREFIX - 1) == 0) {
        const char *name = url + sizeof MODELS_PREFIX - 1;
        const char *slash = strchr(name, '/');
        size_t name_len = slash ? (size_t)(slash - name) : strlen(name);
        const char *rest = slash ? slash : "";
        bool infer = infer_route_of(MODELS_PREFIX, rest) != NULL;
        if (rest[0] != '\0' && !infer)
            goto no_route;
        if (infer && strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return wrong_method(req, method, url, ALLOW_POST);
        if (!infer && !get)
            return wrong_method(req, method, url, ALLOW_GET);
        registry_model *m = find_model(req->reg, name, name_len);
        if (m == NULL)
            return reply_error(req, HTTP_NOT_FOUND, NONE,
                               "unknown model '%.*s'; GET /v1/models lists the models served here",
                               (int)(name_len < 64 ? name_len : 64), name);
        if (infer) /* infer_target() missed it: cannot happen, but answer */
            return reply_error(req, HTTP_INTERNAL_SERVER_ERROR, NONE, "internal routing error");
        proto_model_info info;
        registry_model_info(m, &info);
        return reply(req, HTTP_OK, proto_format_model(&info), NONE);
    }
no_route:
    return reply_error(req, HTTP_NOT_FOUND, NONE,
                       "no route for %.16s %.128s; routes: GET /v2/health/live, "
                       "GET /v2/health/ready, GET /metrics, GET /v1/openapi.json, GET /v1/models, "
                       "GET /v1/models/{name}, "
                       "POST /v1/models/{name}/classify (CNN), "
                       "POST /v1/models/{name}/fill-mask and /next-sentence (BERT), "
                       "POST /v1/models/{name}/generate (GAN), GET /v2, GET /v2/models/{name} "
                       "(/ready, /config), POST /v2/models/{name}/infer",
                       method, url);
}

/* ---- inference: body, queueing and the answer ------------------------------------ */

static enum MHD_Result infer_body(http_req *req, const char *data, size_t *size)
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

/* ---- clients that hang up while their job waits ---------------------------------------
 *
 * libmicrohttpd does not poll a suspended connection, so it cannot see its client
 * go away; the job would run for nobody.  The watcher thread looks at the sockets
 * of suspended requests every HTTP_HANGUP_POLL_MS: one whose peer has closed
 * (POLLRDHUP, so a client that only half-closes counts as gone too) has its job
 * cancelled; if the job was still queued or running, its callback will now never
 * run, so the watcher resumes the connection itself and the handler, finding the
 * job cancelled, closes it.  If the job had already finished, its callback did
 * the resume and the answer goes out as usual (to a closed socket).
 *
 * A request is on the list from a successful submit until its handler runs again
 * or it ends; waiting_remove() waits out a look in progress (`watched`), so the
 * watcher never touches a request that may be freed. */

static void waiting_add(http_req *req)
{
    http_server *s = req->srv;
    pthread_mutex_lock(&s->waiting_mu);
    req->wprev = NULL;
    req->wnext = s->waiting;
    if (s->waiting)
        s->waiting->wprev = req;
    s->waiting = req;
    req->waiting = true;
    s->n_waiting++;
    pthread_mutex_unlock(&s->waiting_mu);
}

static void waiting_remove(http_req *req)
{
    http_server *s = req->srv;
    pthread_mutex_lock(&s->waiting_mu);
    while (req->watched)
        pthread_cond_wait(&s->waiting_cv, &s->waiting_mu);
    if (req->waiting) {
        if (req->wprev)
            req->wprev->wnext = req->wnext;
        else
            s->waiting = req->wnext;
        if (req->wnext)
            req->wnext->wprev = req->wprev;
        req->wprev = req->wnext = NULL;
        req->waiting = false;
        s->n_waiting--;
    }
    pthread_mutex_unlock(&s->waiting_mu);
}

static void drop_hung_up(http_req *req)
{
    batcher_job_state prev = batcher_cancel(req->job);
    if (prev == BATCHER_JOB_QUEUED || prev == BATCHER_JOB_RUNNING) {
        log_debug("%s on %s: the client hung up while its job was %s; dropped",
                  infer_op_name(req->op), req->model->name, batcher_job_state_str(prev));
        MHD_resume_connection(req->conn);
    }
}

static void *watch_hangups(void *arg)
{
    http_server *s = arg;
    struct pollfd *fds = NULL;
    http_req **reqs = NULL;
    size_t cap = 0;
    pthread_mutex_lock(&s->waiting_mu);
    while (!s->watcher_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += HTTP_HANGUP_POLL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->waiting_cv, &s->waiting_mu, &until);
        if (s->watcher_stop)
            break;
        size_t n = 0;
        for (http_req *r = s->waiting; r != NULL; r = r->wnext)
            n++;
        if (n == 0)
            continue;
        if (n > cap) {
            struct pollfd *f = realloc(fds, n * sizeof *fds);
            if (f != NULL)
                fds = f;
            http_req **q = realloc(reqs, n * sizeof *reqs);
            if (q != NULL)
                reqs = q;
            if (f == NULL || q == NULL)
                continue; /* out of memory: look again next round */
            cap = n;
        }
        n = 0;
        for (http_req *r = s->waiting; r != NULL; r = r->wnext) {
            r->watched = true;
            reqs[n] = r;
            fds[n++] = (struct pollfd){.fd = r->fd, .events = POLLRDHUP};
        }
        pthread_mutex_unlock(&s->waiting_mu);
        if (poll(fds, n, 0) > 0)
            for (size_t i = 0; i < n; i++)
                if (fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
                    drop_hung_up(reqs[i]);
        pthread_mutex_lock(&s->waiting_mu);
        for (size_t i = 0; i < n; i++)
            reqs[i]->watched = false;
        pthread_cond_broadcast(&s->waiting_cv);
    }
    pthread_mutex_unlock(&s->waiting_mu);
    free(fds);
    free(reqs);
    return NULL;
}

/* A worker finished (or the queue expired) the job: wake its connection.  Must not
 * touch req after the resume: the request may be answered and freed at once. */
static void on_job_done(batcher_job *job, void *user)
{
    (void)job;
    http_req *req = user;
    MHD_resume_connection(req->conn);
}

/* The task of a classify body: a tensor in, softmax rows out.  0, or an HTTP status
 * with the message in pe. */
static int task_classify(http_req *req, infer_task *t, int *units, proto_error *pe)
{
    registry_model *m = req->model;
    int st = proto_parse_classify(req->body ? req->body : "", req->len, &m->md.preproc,
                                  m->md.n_labels, req->srv->max_images, &t->classify, pe);
    if (st != 0)
        return st;
    t->probs = malloc((size_t)t->classify.n * (size_t)m->md.n_labels * sizeof *t->probs);
    if (t->probs == NULL)
        return HTTP_INTERNAL_SERVER_ERROR;
    t->wt.kind = MODEL_KIND_CNN;
    t->wt.rows = (worker_rows_task){.inputs = t->classify.inputs, .outputs = t->probs,
                                  .n = t->classify.n};
    *units = t->classify.n;
    return 0;
}

/* The task of a fill-mask body: token ids in, top_k ids and scores per mask out. */
static int task_fill_mask(http_req *req, infer_task *t, int *units, proto_error *pe)
{
    proto_bert_model bm;
    registry_bert_model(req->model, &bm);
    int st = proto_parse_fill_mask(req->body ? req->body : "", req->len, &bm, &t->fill, pe);
    if (st != 0)
        return st;
    const proto_fill_mask_req *f = &t->fill;
    size_t answers = (size_t)f->n_mask * (size_t)f->top_k;
    t->top_ids = malloc(answers * sizeof *t->top_ids);
    t->top_scores = malloc(answers * sizeof *t->top_scores);
    if (t->top_ids == NULL || t->top_scores == NULL)
        return HTTP_INTERNAL_SERVER_ERROR;
    t->wt.kind = MODEL_KIND_BERT;
    t->seq = (engine_bert_seq){.ids = f->ids, .type_ids = NULL, .len = f->len,
                               .mask_pos = f->mask_pos, .n_mask = f->n_mask};
    t->wt.bert = (worker_bert_task){
        .seqs = &t->seq,
        .n_seqs = 1,
        .top_k = f->top_k,
        .targets = f->targets,
        .n_targets = f->n_targets,
        .top_ids = t->top_ids,
        .top_scores = t->top_scores,
    };
    *units = f->len;
    return 0;
}

/* The task of a next-sentence body: a sentence pair in, P(is next) out. */
static int task_next_sentence(http_req *req, infer_task *t, int *units, proto_error *pe)
{
    proto_bert_model bm;
    registry_bert_model(req->model, &bm);
    int st = proto_parse_next_sentence(req->body ? req->body : "", req->len, &bm, &t->pair, pe);
    if (st != 0)
        return st;
    t->wt.kind = MODEL_KIND_BERT;
    t->seq = (engine_bert_seq){.ids = t->pair.ids, .type_ids = t->pair.type_ids,
                               .len = t->pair.len};
    t->wt.bert = (worker_bert_task){.seqs = &t->seq, .n_seqs = 1, .want_nsp = true};
    *units = t->pair.len;
    return 0;
}

/* The task of a generate body: latent rows (and classes) in, images out. */
static int task_generate(http_req *req, infer_task *t, int *units, proto_error *pe)
{
    proto_gan_model gm;
    registry_gan_model(req->model, &gm);
    uint64_t random_seed;
    /* an omitted seed is drawn here and reported, so any image can be made again */
    if (getrandom(&random_seed, sizeof random_seed, 0) != (ssize_t)sizeof random_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        random_seed = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
    }
    int st = proto_parse_generate(req->body ? req->body : "", req->len, &gm, random_seed,
                                  &t->gen, pe);
    if (st != 0)
        return st;
    if (req->want_png && t->gen.n > 1 && !t->gen.grid) {
        snprintf(pe->msg, sizeof pe->msg, "Accept: image/png answers with one PNG: ask for "
                 "one image, or for \"grid\": true (or accept application/json)");
        return HTTP_UNPROCESSABLE;
    }
    t->images = malloc((size_t)t->gen.n * (size_t)gm.channels * (size_t)gm.height *
                       (size_t)gm.width * sizeof *t->images);
    if (t->images == NULL)
        return HTTP_INTERNAL_SERVER_ERROR;
    t->wt.kind = MODEL_KIND_GAN;
    t->wt.rows = (worker_rows_task){.inputs = t->gen.latents, .classes = t->gen.classes,
                                    .outputs = t->images, .n = t->gen.n};
    *units = t->gen.n;
    return 0;
}

/* Fills pe for a refusal decided here rather than in proto; returns status. */
__attribute__((format(printf, 3, 4))) static int task_error(proto_error *pe, int status,
                                                            const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pe->msg, sizeof pe->msg, fmt, ap);
    va_end(ap);
    pe->status = status;
    return status;
}

/* A v2 answer's logits at most this big: a BERT request's rows are masks x vocabulary. */
#define HTTP_V2_MAX_LOGITS_BYTES (256u << 20)
/* Values a v2 answer may carry as JSON "data": each costs ~40 bytes as a jansson
 * value on the HTTP thread before ~12 as text, so more goes as binary data. */
#define HTTP_V2_MAX_JSON_VALUES 2000000u

/* 413 when the outputs the request will get as JSON hold more than
 * HTTP_V2_MAX_JSON_VALUES values (names[i] has counts[i]). */
static int v2_json_size(const kserve_request *r, const char *const *names, const size_t *counts,
                        int n, proto_error *pe)
{
    size_t values = 0;
    for (int i = 0; i < n; i++)
        if (kserve_output_in_json(r, names[i]))
            values += counts[i];
    if (values <= HTTP_V2_MAX_JSON_VALUES)
        return 0;
    return task_error(pe, HTTP_CONTENT_TOO_LARGE,
                      "the answer would carry %zu values as JSON, over the %u allowed; ask for "
                      "the outputs as binary data (\"parameters\": {\"binary_data_output\": "
                      "true}) or send fewer rows",
                      values, HTTP_V2_MAX_JSON_VALUES);
}

/* The task of a v2 infer body, per model kind: tensors in, the outputs' buffers. */
static int task_v2(http_req *req, infer_task *t, int *units, proto_error *pe)
{
    registry_model *m = req->model;
    size_t len = req->len;
    int st = kserve_parse_infer(req->body ? req->body : "", len,
                                req->v2_binary ? req->v2_header_len : len, &t->v2, pe);
    if (st != 0)
        return st;
    /* Outputs asked for by name must exist: checked before running anything. */
    proto_model_info info;
    registry_model_info(m, &info);
    kserve_model_io io;
    kserve_describe(&info, &io);
    const char *outputs[KSERVE_MAX_OUTPUTS];
    for (int j = 0; j < io.n_out; j++)
        outputs[j] = io.out[j].name;
    if ((st = kserve_check_outputs(&t->v2, m->name, outputs, io.n_out, pe)) != 0)
        return st;
    if (m->md.kind == MODEL_KIND_CNN) {
        st = kserve_cnn_input(&t->v2, m->name, &m->md.preproc, req->srv->max_images, &t->v2_inputs,
                              &t->v2_n, pe);
        if (st != 0)
            return st;
        size_t out = (size_t)t->v2_n * (size_t)m->md.n_labels;
        static const char *const names[] = {"logits", "probabilities"};
        const size_t counts[] = {out, out};
        if ((st = v2_json_size(&t->v2, names, counts, 2, pe)) != 0)
            return st;
        t->probs = malloc(out * sizeof *t->probs);
        t->logits = malloc(out * sizeof *t->logits);
        if (t->probs == NULL || t->logits == NULL)
            return HTTP_INTERNAL_SERVER_ERROR;
        t->wt.kind = MODEL_KIND_CNN;
        t->wt.rows = (worker_rows_task){.inputs = t->v2_inputs, .outputs = t->probs,
                                        .logits = t->logits, .n = t->v2_n};
        *units = t->v2_n;
        return 0;
    }
    if (m->md.kind == MODEL_KIND_GAN) {
        proto_gan_model gm;
        registry_gan_model(m, &gm);
        st = kserve_gan_input(&t->v2, &gm, &t->v2_inputs, &t->v2_classes, &t->v2_n, pe);
        if (st != 0)
            return st;
        size_t out = (size_t)t->v2_n * (size_t)gm.channels * (size_t)gm.height *
                     (size_t)gm.width;
        static const char *const names[] = {"images"};
        if ((st = v2_json_size(&t->v2, names, &out, 1, pe)) != 0)
            return st;
        t->images = malloc(out * sizeof *t->images);
        if (t->images == NULL)
            return HTTP_INTERNAL_SERVER_ERROR;
        t->wt.kind = MODEL_KIND_GAN;
        t->wt.rows = (worker_rows_task){.inputs = t->v2_inputs, .classes = t->v2_classes,
                                        .outputs = t->images, .n = t->v2_n};
        *units = t->v2_n;
        return 0;
    }
    proto_bert_model bm;
    registry_bert_model(m, &bm);
    const int vocab = m->md.bert.vocab_size;
    st = kserve_bert_input(&t->v2, &bm, vocab, m->md.bert.type_vocab_size, req->srv->max_images,
                           &t->v2_bert, pe);
    if (st != 0)
        return st;
    size_t rows = (size_t)t->v2_bert.n_mask;
    if (rows * (size_t)vocab * sizeof(float) > HTTP_V2_MAX_LOGITS_BYTES)
        return task_error(pe, HTTP_CONTENT_TOO_LARGE,
                                 "%zu [MASK] positions x %d logits is over the %u MiB an answer "
                                 "may take; send fewer masks per request",
                                 rows, vocab, HTTP_V2_MAX_LOGITS_BYTES >> 20);
    static const char *const names[] = {"logits", "mask_positions"};
    const size_t counts[] = {rows * (size_t)vocab, rows * 2};
    if ((st = v2_json_size(&t->v2, names, counts, 2, pe)) != 0)
        return st;
    t->logits = malloc((rows ? rows : 1) * (size_t)vocab * sizeof *t->logits);
    if (t->logits == NULL)
        return HTTP_INTERNAL_SERVER_ERROR;
    t->wt.kind = MODEL_KIND_BERT;
    t->wt.bert = (worker_bert_task){.seqs = t->v2_bert.seqs, .n_seqs = t->v2_bert.n,
                                    .logits = t->logits};
    *units = t->v2_bert.tokens;
    return 0;
}

static enum MHD_Result infer_submit(http_req *req)
{
    http_server *s = req->srv;
    registry_model *m = req->model;
    if (req->too_large)
        return reply_error(req, HTTP_CONTENT_TOO_LARGE, NONE,
                           "body is over the limit of %zu bytes (max_body_bytes); %s",
                           s->max_body,
                           body_hint(req->op));
    if (!registry_model_ready(m))
        return reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                           "model %s is not available: the server is shutting down", m->name);

    infer_task *t = calloc(1, sizeof *t);
    if (t == NULL)
        return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);
    proto_error pe = {.status = 0, .msg = "out of memory preparing the request"};
    int units = 0, st;
    switch (req->op) {
    case INFER_CLASSIFY: st = task_classify(req, t, &units, &pe); break;
    case INFER_FILL_MASK: st = task_fill_mask(req, t, &units, &pe); break;
    case INFER_NEXT_SENTENCE: st = task_next_sentence(req, t, &units, &pe); break;
    case INFER_GENERATE: st = task_generate(req, t, &units, &pe); break;
    case INFER_V2: st = task_v2(req, t, &units, &pe); break;
    default:
        st = HTTP_INTERNAL_SERVER_ERROR;
        snprintf(pe.msg, sizeof pe.msg, "internal routing error");
    }
    free(req->body);
    req->body = NULL;
    if (st != 0) {
        infer_task_free(t);
        return reply_error(req, (unsigned)st, NONE, "%s", pe.msg);
    }

    batcher_job *job = batcher_job_new(t, infer_task_free, units, on_job_done, req);
    if (job == NULL) /* t is freed */
        return reply(req, HTTP_INTERNAL_SERVER_ERROR, NULL, NONE);

    batcher_job_set_timeout(job, req->timeout_us);
    /* Suspend before submitting: once queued, a worker may resume us at any time,
     * and a resume must not come before the suspend.  (The handler itself cannot run
     * again before this call returns: libmicrohttpd serves a connection from one
     * thread, this one, so the waiting list is joined in time.) */
    MHD_suspend_connection(req->conn);
    req->job = job;
    batcher_status bs = batcher_submit(m->batcher, job);
    if (bs == BATCHER_OK) {
        metrics_in_flight_add(m->metrics, 1);
        waiting_add(req);
    } else {
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

/* The body of a done job's answer (NULL: out of memory). */
static char *infer_format(http_req *req, infer_task *t)
{
    registry_model *m = req->model;
    proto_error pe;
    proto_bert_model bm;
    switch (req->op) {
    case INFER_CLASSIFY:
        return proto_format_classify(m->name, t->classify.form, t->probs, t->classify.n,
                                     m->md.n_labels, t->classify.top_k, m->md.labels, &pe);
    case INFER_FILL_MASK:
        registry_bert_model(m, &bm);
        return proto_format_fill_mask(&bm, &t->fill, t->top_ids, t->top_scores, &pe);
    case INFER_NEXT_SENTENCE:
        return proto_format_next_sentence(m->name, t->wt.bert.is_next, &pe);
    case INFER_GENERATE: {
        proto_gan_model gm;
        registry_gan_model(m, &gm);
        return proto_format_generate(&gm, &t->gen, t->images, &pe);
    }
    default:
        return NULL;
    }
}

/* A generate answer as one PNG body (Accept: image/png), its seed in a header. */
static enum MHD_Result reply_png(http_req *req, infer_task *t)
{
    proto_gan_model gm;
    registry_gan_model(req->model, &gm);
    proto_error pe;
    uint8_t *png;
    size_t len;
    int st = proto_generate_png(&gm, &t->gen, t->images, &png, &len, &pe);
    if (st != 0)
        return reply_error(req, (unsigned)st, NONE, "%s", pe.msg);
    struct MHD_Response *r = MHD_create_response_from_buffer(len, png, MHD_RESPMEM_MUST_FREE);
    if (r == NULL) {
        free(png);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "image/png");
    if (t->gen.seeds != NULL && t->gen.n == 1) {
        char seed[24];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->gen.seeds[0]);
        MHD_add_response_header(r, "X-Seed", seed);
    }
    return send_response(req, HTTP_OK, r);
}

/* A v2 infer answer: the outputs of the model's kind, JSON or JSON + binary. */
static enum MHD_Result reply_v2(http_req *req, infer_task *t)
{
    registry_model *m = req->model;
    kserve_output outs[2];
    int n = 0;
    if (m->md.kind == MODEL_KIND_CNN) {
        const int64_t k = m->md.n_labels;
        outs[n++] = (kserve_output){"logits", KSERVE_FP32, 2, {t->v2_n, k}, .f32 = t->logits};
        outs[n++] = (kserve_output){"probabilities", KSERVE_FP32, 2, {t->v2_n, k},
                                    .f32 = t->probs};
    } else if (m->md.kind == MODEL_KIND_GAN) {
        const gan_spec *gs = &m->md.gan;
        outs[n++] = (kserve_output){"images", KSERVE_FP32, 4,
                                    {t->v2_n, gs->out_channels, gs->out_height, gs->out_width},
                                    .f32 = t->images};
    } else {
        const int64_t rows = t->v2_bert.n_mask;
        outs[n++] = (kserve_output){"logits", KSERVE_FP32, 2, {rows, m->md.bert.vocab_size},
                                    .f32 = t->logits};
        outs[n++] = (kserve_output){"mask_positions", KSERVE_INT64, 2, {rows, 2},
                                    .i64 = t->v2_bert.positions};
    }
    char *body;
    size_t len, json_len;
    proto_error pe;
    if (kserve_format_infer(m->name, &t->v2, outs, n, &body, &len, &json_len, &pe) != 0)
        return reply_error(req, (unsigned)pe.status, NONE, "%s", pe.msg);
    if (json_len == len)
        return reply_len(req, HTTP_OK, body, len, NONE);
    return reply_len(req, HTTP_OK, body, len,
                     (reply_opts){.content_type = "application/octet-stream",
                                  .inference_header_len = json_len});
}

/* Resumed after on_job_done(): turn the job's state into the answer. */
static enum MHD_Result infer_answer(http_req *req)
{
    http_server *s = req->srv;
    registry_model *m = req->model;
    batcher_job *job = req->job;
    waiting_remove(req);
    req->job = NULL;
    metrics_in_flight_add(m->metrics, -1);
    enum MHD_Result ret;
    batcher_job_state st = batcher_job_state_get(job);
    double waited_ms = (double)batcher_job_wait_us(job) / 1e3;
    req->queue_us = batcher_job_wait_us(job);
    req->compute_us = batcher_job_run_us(job);
    req->batch_rows = ((infer_task *)batcher_job_payload(job))->wt.batch_rows;
    if (st == BATCHER_JOB_DONE) {
        metrics_observe(&m->metrics->queue_us, batcher_job_wait_us(job));
        metrics_observe(&m->metrics->compute_us, batcher_job_run_us(job));
        metrics_observe(&m->metrics->total_us, (uint64_t)(ms_since(&req->t0) * 1e3));
    }

    if (st == BATCHER_JOB_DONE && req->op == INFER_V2) {
        ret = reply_v2(req, batcher_job_payload(job));
    } else if (st == BATCHER_JOB_DONE && req->want_png) {
        ret = reply_png(req, batcher_job_payload(job));
        log_debug("generate on %s: %d image(s) as PNG, queued %.1f ms", m->name,
                  batcher_job_units(job), waited_ms);
    } else if (st == BATCHER_JOB_DONE) {
        char *body = infer_format(req, batcher_job_payload(job));
        log_debug("%s on %s: %d unit(s), queued %.1f ms", infer_op_name(req->op), m->name,
                  batcher_job_units(job), waited_ms);
        ret = reply(req, HTTP_OK, body, NONE);
    } else if (st == BATCHER_JOB_EXPIRED) {
        log_warn("model %s: request expired after %.0f ms in the queue", m->name, waited_ms);
        req->outcome = METRICS_EXPIRED;
        if (req->timeout_us > 0)
            ret = reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                              "request waited %.0f ms in model %s's queue, over its "
                              HTTP_TIMEOUT_HEADER " (%llu): the server is overloaded, retry "
                              "later",
                              waited_ms, m->name, (unsigned long long)(req->timeout_us / 1000));
        else
            ret = reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                              "request waited %.0f ms in model %s's queue, over "
                              "request_timeout_ms (%d): the server is overloaded, retry later",
                              waited_ms, m->name, s->request_timeout_ms);
    } else if (st == BATCHER_JOB_CANCELLED) {
        /* The watcher saw the client go: nobody to answer, close the connection. */
        req->outcome = METRICS_CANCELLED;
        count_outcome(req, 0);
        ret = MHD_NO;
    } else if (st == BATCHER_JOB_FAILED && atomic_load(&s->draining)) {
        ret = reply_error(req, HTTP_SERVICE_UNAVAILABLE, (reply_opts){.retry_after = true},
                          "not run: %s", batcher_job_error(job));
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

/* ---- request ids and access control ------------------------------------------------ */

/* The client's X-Request-Id if it is a sane one, else a fresh 16-hex-digit id. */
static void assign_request_id(http_server *s, http_req *req)
{
    const char *given = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    size_t n = given ? strlen(given) : 0;
    bool ok = n > 0 && n <= HTTP_REQUEST_ID_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = isalnum((unsigned char)given[i]) || strchr("._:-", given[i]) != NULL;
    if (ok)
        memcpy(req->id, given, n + 1);
    else
        snprintf(req->id, sizeof req->id, "%016llx",
                 (unsigned long long)(s->id_base + atomic_fetch_add(&s->next_id, 1)));
}

/* Routes that answer without the token when the config says so. */
static bool auth_exempt(const http_server *s, const char *url)
{
    if (s->open_health &&
        (strcmp(url, "/v2/health/live") == 0 || strcmp(url, "/v2/health/ready") == 0))
        return true;
    return s->open_metrics && strcmp(url, "/metrics") == 0;
}

/* Does the request carry "Authorization: Bearer <token>"?  The comparison takes the
 * same time wherever the first wrong byte is, so the token cannot be guessed byte
 * by byte from response times; only the length the client sent shows. */
static bool authorized(const http_server *s, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_AUTHORIZATION);
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    const char *got = h + 7;
    while (*got == ' ')
        got++;
    size_t n = strlen(got);
    unsigned diff = n != s->token_len;
    for (size_t i = 0; i < s->token_len; i++)
        diff |= (unsigned char)s->token[i] ^ (unsigned char)(i < n ? got[i] : 0);
    return diff == 0;
}

/* auth_token_file: the token is the file's content without trailing whitespace. */
static int load_token(http_server *s, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return log_errbuf(err, errlen, "auth_token_file %s: %s", path, strerror(errno));
    char *buf = malloc(HTTP_TOKEN_MAX + 2);
    size_t n = buf ? fread(buf, 1, HTTP_TOKEN_MAX + 1, f) : 0;
    fclose(f);
    if (buf == NULL)
        return log_errbuf(err, errlen, "out of memory");
    while (n > 0 && isspace((unsigned char)buf[n - 1]))
        n--;
    buf[n] = '\0';
    bool printable_token = n > 0;
    for (size_t i = 0; i < n; i++)
        printable_token = printable_token && buf[i] > 0x20 && buf[i] < 0x7f;
    if (n > HTTP_TOKEN_MAX || !printable_token) {
        free(buf);
        return log_errbuf(err, errlen,
                          "auth_token_file %s: the token must be 1 to %d printable characters "
                          "without spaces",
                          path, HTTP_TOKEN_MAX);
    }
    s->token = buf;
    s->token_len = n;
    return 0;
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
        pthread_mutex_lock(&s->reg_mu);
        req->reg = s->reg;
        registry_ref(req->reg);
        pthread_mutex_unlock(&s->reg_mu);
        req->conn = conn;
        req->outcome = -1;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        req->fd = ci != NULL ? (int)ci->connect_fd : -1;
        req->method = method;
        req->url = url;
        clock_gettime(CLOCK_MONOTONIC, &req->t0);
        *req_cls = req;
        atomic_fetch_add(&s->in_flight, 1);
        assign_request_id(s, req);
        /* Before anything else, and before a body is read: 401 closes the connection. */
        if (s->token != NULL && !auth_exempt(s, url) && !authorized(s, conn))
            return reply_error(req, HTTP_UNAUTHORIZED, (reply_opts){.challenge = true},
                               "this server requires a bearer token: send 'Authorization: "
                               "Bearer <token>' (the token in the server's auth_token_file)");
        /* An inference request may be refused on its headers alone (404 for the
         * wrong kind, 415, 413, 503, 422 without a next-sentence head), before its
         * body is read; everything else is answered when fully received. */
        const struct infer_route *rt = NULL;
        registry_model *m = infer_target(req->reg, url, method, &rt);
        if (m != NULL) {
            req->target = m;
            return infer_begin(req, m, rt);
        }
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
        return infer_body(req, upload_data, upload_size);
    if (req->job != NULL)
        return infer_answer(req);
    if (req->deferred_status != 0)
        return reply_error(req, (unsigned)req->deferred_status,
                           (reply_opts){.retry_after = req->deferred_retry}, "%s",
                           req->deferred_msg);
    return infer_submit(req);
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
        waiting_remove(req);
        batcher_job_state prev = batcher_cancel(req->job);
        req->outcome = METRICS_CANCELLED;
        count_outcome(req, 0);
        metrics_in_flight_add(req->model->metrics, -1);
        log_debug("request ended (code %d) with its job %s", (int)toe,
                  batcher_job_state_str(prev));
        batcher_job_release(req->job);
    } else if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        log_debug("request ended (code %d) before an answer", (int)toe);
    }
    free(req->body);
    registry_unref(req->reg);
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
    /* The handler returns MHD_NO on purpose to close the connection of a client
     * that hung up while queued (infer_answer); libmicrohttpd calls that an internal
     * error.  Routine under load, so not a warning. */
    if (strncmp(msg, "Application reported internal error", 35) == 0)
        log_debug("libmicrohttpd: %s", msg);
    else
        log_warn("libmicrohttpd: %s", msg);
}

/* ---- start and stop ------------------------------------------------------------- */

/* Socket activation (systemd/modeld.socket): the listening socket systemd passed,
 * as fd 3 with LISTEN_FDS=1.  1 and the fd, 0 if none was passed (or modeld was
 * built without libsystemd), -1 on a passed fd that cannot serve. */
static int passed_listener(http_server *s, int *fd_out, int *family, char *err, size_t errlen)
{
#ifdef HAVE_SYSTEMD
    int n = sd_listen_fds(1); /* 1: unset LISTEN_FDS, so no child inherits it */
    if (n <= 0)
        return n < 0 ? log_errbuf(err, errlen, "socket activation: %s", strerror(-n)) : 0;
    int fd = SD_LISTEN_FDS_START;
    if (n > 1 || sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0)
        return log_errbuf(err, errlen,
                          "socket activation: expected one listening TCP socket, got %d fd(s)", n);
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0 ||
        getnameinfo((struct sockaddr *)&sa, len, host, sizeof host, port, sizeof port,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        return log_errbuf(err, errlen, "socket activation: cannot read the socket's address");
    snprintf(s->address, sizeof s->address, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s",
             host, port);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    *fd_out = fd;
    *family = sa.ss_family;
    s->socket_passed = true;
    return 1;
#else
    (void)s, (void)fd_out, (void)family, (void)err, (void)errlen;
    return 0;
#endif
}

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
    s->max_request_timeout_ms = cfg->max_request_timeout_ms;
    s->quiesced_fd = -1;
    s->open_health = cfg->auth_open_health;
    s->open_metrics = cfg->auth_open_metrics;
    s->access_log = cfg->access_log;
    if (getrandom(&s->id_base, sizeof s->id_base, 0) != (ssize_t)sizeof s->id_base)
        s->id_base = (uint64_t)time(NULL) << 20;
    atomic_init(&s->next_id, 0);
    atomic_init(&s->in_flight, 0);
    atomic_init(&s->draining, false);
    snprintf(s->address, sizeof s->address, "%s", cfg->listen);

    if (pthread_mutex_init(&s->waiting_mu, NULL) != 0) {
        free(s);
        return log_errbuf(err, errlen, "cannot create a mutex");
    }
    if (pthread_mutex_init(&s->reg_mu, NULL) != 0) {
        pthread_mutex_destroy(&s->waiting_mu);
        free(s);
        return log_errbuf(err, errlen, "cannot create a mutex");
    }
    if (pthread_cond_init(&s->waiting_cv, NULL) != 0) {
        pthread_mutex_destroy(&s->waiting_mu);
        pthread_mutex_destroy(&s->reg_mu);
        free(s);
        return log_errbuf(err, errlen, "cannot create a condition variable");
    }

    if (cfg->auth_token_file[0] != '\0' && load_token(s, cfg->auth_token_file, err, errlen) != 0) {
        http_stop(s);
        return -1;
    }
    int family = AF_INET;
    int passed = passed_listener(s, &s->listen_fd, &family, err, errlen);
    if (passed < 0 || (passed == 0 && open_listener(cfg, &s->listen_fd, &family, err, errlen) != 0)) {
        http_stop(s);
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
        http_stop(s);
        return log_errbuf(err, errlen, "cannot start the HTTP server on %s (libmicrohttpd refused; "
                                 "see the log above)",
                    cfg->listen);
    }
    int rc = pthread_create(&s->watcher, NULL, watch_hangups, s);
    if (rc != 0) {
        http_stop(s);
        return log_errbuf(err, errlen, "cannot start the hang-up watcher thread: %s",
                          strerror(rc));
    }
    s->watcher_started = true;
    *out = s;
    return 0;
}

const char *http_address(const http_server *h) { return h->address; }

registry *http_swap_registry(http_server *h, registry *next)
{
    pthread_mutex_lock(&h->reg_mu);
    registry *old = h->reg;
    h->reg = next;
    pthread_mutex_unlock(&h->reg_mu);
    return old;
}

void http_quiesce(http_server *h)
{
    if (h == NULL || atomic_exchange(&h->draining, true))
        return;
    MHD_socket fd = MHD_quiesce_daemon(h->mhd);
    if (fd == MHD_INVALID_SOCKET)
        return;
    /* Connections the kernel has completed but nobody accepted yet would be reset
     * when the socket stops listening, their requests maybe already sent: accept
     * them and hand them to libmicrohttpd, which answers them like any other. */
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int c = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0)
            break;
        if (MHD_add_connection(h->mhd, c, (struct sockaddr *)&sa, len) != MHD_YES)
            log_warn("cannot serve a connection accepted while shutting down: %s",
                     strerror(errno));
    }
    /* Stop listening now, so new clients are refused at once instead of queueing for
     * a server that will not accept them; the descriptor itself stays open until
     * after MHD_stop_daemon, as libmicrohttpd's threads may still look at it.  Not
     * systemd's socket: shutdown() acts on the socket, not on our descriptor, and
     * systemd keeps it listening so the next modeld finds the waiting clients. */
    if (!h->socket_passed)
        shutdown(fd, SHUT_RDWR);
    h->quiesced_fd = fd;
}

bool http_settle(http_server *h, int timeout_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        pthread_mutex_lock(&h->waiting_mu);
        bool settled = atomic_load(&h->in_flight) <= h->n_waiting;
        pthread_mutex_unlock(&h->waiting_mu);
        if (settled)
            return true;
        if (ms_since(&t0) >= timeout_ms)
            return false;
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
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
    /* The watcher first: it may resume connections, which needs the daemon. */
    if (h->watcher_started) {
        pthread_mutex_lock(&h->waiting_mu);
        h->watcher_stop = true;
        pthread_cond_broadcast(&h->waiting_cv);
        pthread_mutex_unlock(&h->waiting_mu);
        pthread_join(h->watcher, NULL);
    }
    if (h->mhd != NULL)
        MHD_stop_daemon(h->mhd);
    if (h->quiesced_fd >= 0)
        close(h->quiesced_fd);
    pthread_cond_destroy(&h->waiting_cv);
    pthread_mutex_destroy(&h->waiting_mu);
    pthread_mutex_destroy(&h->reg_mu);
    free(h->token);
    free(h);
}
