/* config.c — every setting of the daemon, in one table.
 *
 * Owns the option table below: one row per key with its section, type, default,
 * bounds and the sentence that documents it.  Defaults are applied by parsing each
 * row's default text through the same setter as a user's value, so a default can
 * never fall outside its own bounds; --help prints the same rows, and
 * conf/modeld.conf repeats them for people (tests/check_config.c checks that the
 * file names every key).
 *
 * Runs once, on the main thread, before any other thread exists.  It never exits
 * or prints: every problem comes back as a message naming the file, line, key and
 * the accepted range, and main.c turns it into exit status 2.
 *
 * INI parsing is inih's (Debian libinih-dev).  Its handler is not told line
 * numbers in Debian's build (INI_HANDLER_LINENO 0), so the file is fed through
 * ini_parse_stream() with a line-counting reader; that reader is also where lines
 * longer than inih's fixed buffer are caught instead of being split silently.
 */
#include <config.h>

#include "daemon/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "daemon/log.h"

#ifndef MODELD_PKGDATADIR
#define MODELD_PKGDATADIR "/usr/local/share/modeld"
#endif

/* ---- the table ------------------------------------------------------------------ */

typedef enum opt_type {
    OPT_INT,       /* decimal integer within [min, max] */
    OPT_BYTES,     /* integer with an optional K/M/G suffix (powers of 1024) */
    OPT_LISTEN,    /* HOST:PORT or [IPv6]:PORT */
    OPT_LOG_LEVEL, /* debug | info | warn | error */
    OPT_PATH,      /* a directory; existence is checked when the model loads */
    OPT_FILE,      /* a file path, may be empty (the feature is off); read at start */
    OPT_BOOL,      /* yes | no | true | false | on | off | 1 | 0, into an int */
} opt_type;

typedef enum opt_scope {
    SCOPE_SERVER, /* [server], fields of struct config */
    SCOPE_MODEL,  /* [model NAME], fields of struct config_model */
} opt_scope;

typedef struct config_option {
    opt_scope scope;
    const char *name;
    opt_type type;
    const char *def; /* text form; NULL: required (path) or inherited from [server] */
    long long min, max;
    size_t offset;   /* into struct config or struct config_model, by scope */
    const char *doc;
} config_option;

#define KIB 1024LL
#define MIB (1024LL * 1024LL)
#define GIB (1024LL * 1024LL * 1024LL)

#define SERVER(field) SCOPE_SERVER, #field
#define MODEL(field) SCOPE_MODEL, #field
static const config_option options[] = {
    {SERVER(listen), OPT_LISTEN, "127.0.0.1:8080", 0, 0, offsetof(config, listen),
     "address to serve on, HOST:PORT or [IPv6]:PORT; loopback unless told otherwise"},
    {SERVER(http_threads), OPT_INT, "4", 1, 256, offsetof(config, http_threads),
     "HTTP threads; they parse and validate requests, never run models"},
    {SERVER(max_body_bytes), OPT_BYTES, "8MiB", 64, GIB, offsetof(config, max_body_bytes),
     "largest request body (suffixes K, M, G are powers of 1024); larger gets 413"},
    {SERVER(workers), OPT_INT, "1", 1, 256, offsetof(config, workers),
     "inference threads per model, each owning one engine session"},
    {SERVER(blas_threads), OPT_INT, "0", 0, 256, offsetof(config, blas_threads),
     "BLAS threads per forward pass; 0 = cores / workers of all models, at least 1"},
    {SERVER(queue_capacity), OPT_INT, "256", 1, 1000000, offsetof(config, queue_capacity),
     "requests waiting per model; when full, 503 with Retry-After: 1"},
    {SERVER(max_batch_size), OPT_INT, "16", 1, 4096, offsetof(config, max_batch_size),
     "images (CNN) or sequences (BERT) per forward pass; a larger request runs in chunks"},
    {SERVER(max_batch_tokens), OPT_INT, "0", 0, 16777216, offsetof(config, max_batch_tokens),
     "BERT: tokens per forward pass; 0 = max_batch_size x max_position_embeddings"},
    {SERVER(max_images_per_request), OPT_INT, "256", 1, 100000,
     offsetof(config, max_images_per_request), "images in one classify request; more gets 413"},
    {SERVER(max_generate_images), OPT_INT, "64", 1, 100000,
     offsetof(config, max_generate_images), "images in one generate request; more gets 413"},
    {SERVER(request_timeout_ms), OPT_INT, "30000", 1, 3600000,
     offsetof(config, request_timeout_ms),
     "longest a request waits in its model's queue before it fails with 503"},
    {SERVER(max_request_timeout_ms), OPT_INT, "300000", 1, 3600000,
     offsetof(config, max_request_timeout_ms),
     "largest X-Request-Timeout-Ms a request may ask for instead of request_timeout_ms"},
    {SERVER(max_queue_delay_us), OPT_INT, "0", 0, 1000000, offsetof(config, max_queue_delay_us),
     "how long a worker waits for more requests to fill a batch; 0 = run what is queued"},
    {SERVER(shutdown_timeout_ms), OPT_INT, "30000", 0, 3600000,
     offsetof(config, shutdown_timeout_ms),
     "on SIGTERM: how long queued requests may still run; then the rest get 503"},
    {SERVER(log_level), OPT_LOG_LEVEL, "info", 0, 0, offsetof(config, log_level),
     "least severe log lines written to stderr: debug, info, warn or error"},
    {SERVER(access_log), OPT_BOOL, "no", 0, 0, offsetof(config, access_log),
     "one info line per request: id, method, path, model, status, latency, batch"},
    {SERVER(auth_token_file), OPT_FILE, "", 0, 0, offsetof(config, auth_token_file),
     "file holding a bearer token every request must send (Authorization: Bearer); empty = off"},
    {SERVER(auth_open_health), OPT_BOOL, "yes", 0, 0, offsetof(config, auth_open_health),
     "with auth on: /v2/health/live and /ready answer without the token"},
    {SERVER(auth_open_metrics), OPT_BOOL, "no", 0, 0, offsetof(config, auth_open_metrics),
     "with auth on: /metrics answers without the token"},
    {MODEL(path), OPT_PATH, NULL, 0, 0, offsetof(config_model, path),
     "model directory: config.json, model.safetensors, labels.txt (docs/MODELS.md); required"},
    {MODEL(workers), OPT_INT, NULL, 1, 256, offsetof(config_model, workers),
     "this model's workers; default [server] workers"},
    {MODEL(max_batch_size), OPT_INT, NULL, 1, 4096, offsetof(config_model, max_batch_size),
     "this model's max_batch_size; default [server] max_batch_size"},
    {MODEL(max_batch_tokens), OPT_INT, NULL, 1, 16777216,
     offsetof(config_model, max_batch_tokens),
     "this BERT model's max_batch_tokens; default [server] max_batch_tokens"},
    {MODEL(queue_capacity), OPT_INT, NULL, 1, 1000000, offsetof(config_model, queue_capacity),
     "this model's queue_capacity; default [server] queue_capacity"},
};
#undef SERVER
#undef MODEL
#define N_OPTIONS ((int)(sizeof options / sizeof options[0]))

/* ---- small helpers ------------------------------------------------------------ */

static const char *scope_name(opt_scope s) { return s == SCOPE_SERVER ? "server" : "model"; }

static const config_option *find_option(opt_scope scope, const char *name)
{
    for (int i = 0; i < N_OPTIONS; i++)
        if (options[i].scope == scope && strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* "listen, http_threads, ..." for an unknown-key message. */
static void known_keys(opt_scope scope, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int i = 0; i < N_OPTIONS && n < len; i++) {
        if (options[i].scope != scope)
            continue;
        int w = snprintf(buf + n, len - n, "%s%s", n ? ", " : "", options[i].name);
        if (w < 0)
            break;
        n += (size_t)w;
    }
}

static bool model_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= CONFIG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
            return false;
    }
    /* "." and ".." would read as path segments in /v1/models/{name}. */
    return strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static bool parse_ll(const char *s, long long *out, const char **rest)
{
    if (!isdigit((unsigned char)s[0]) && !(s[0] == '-' && isdigit((unsigned char)s[1])))
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return false;
    *out = v;
    *rest = end;
    return true;
}

static int set_int(const config_option *o, void *field, const char *value, const char *where,
                   char *err, size_t errlen)
{
    long long v;
    const char *rest;
    if (!parse_ll(value, &v, &rest) || *rest != '\0')
        return log_errbuf(err, errlen, "%s = '%s': expected an integer from %lld to %lld", where, value,
                    o->min, o->max);
    if (v < o->min || v > o->max)
        return log_errbuf(err, errlen, "%s = %lld is out of range: allowed %lld to %lld", where, v,
                    o->min, o->max);
    *(int *)field = (int)v;
    return 0;
}

static int set_bytes(const config_option *o, void *field, const char *value, const char *where,
                     char *err, size_t errlen)
{
    long long v;
    const char *rest;
    if (!parse_ll(value, &v, &rest))
        goto bad;
    long long mult = 1;
    if (*rest != '\0') {
        switch (toupper((unsigned char)*rest)) {
        case 'K': mult = KIB; break;
        case 'M': mult = MIB; break;
        case 'G': mult = GIB; break;
        default: goto bad;
        }
        rest++;
        /* "8M", "8MB" and "8MiB" all mean 8 * 1024 * 1024. */
        if (strcasecmp(rest, "ib") != 0 && strcasecmp(rest, "b") != 0 && *rest != '\0')
            goto bad;
    }
    if (v < 0 || (v > 0 && mult > o->max / v + 1))
        return log_errbuf(err, errlen, "%s = %s is out of range: allowed %lld to %lld bytes", where,
                    value, o->min, o->max);
    v *= mult;
    if (v < o->min || v > o->max)
        return log_errbuf(err, errlen, "%s = %s is out of range: allowed %lld to %lld bytes", where,
                    value, o->min, o->max);
    *(long long *)field = v;
    return 0;
bad:
    return log_errbuf(err, errlen, "%s = '%s': expected a byte count such as 8388608, 512K or 8M",
                where, value);
}

/* HOST:PORT, or [IPv6]:PORT; the host is kept without brackets. */
static int parse_listen(config *c, const char *value, const char *where, char *err,
                        size_t errlen)
{
    const char *host = value, *colon;
    size_t host_len;
    if (value[0] == '[') {
        const char *close = strchr(value, ']');
        if (close == NULL || close[1] != ':')
            return log_errbuf(err, errlen, "%s = '%s': expected [IPv6]:PORT, e.g. [::1]:8080", where,
                        value);
        host = value + 1;
        host_len = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(value, ':');
        if (colon == NULL)
            return log_errbuf(err, errlen, "%s = '%s': expected HOST:PORT, e.g. 127.0.0.1:8080", where,
                        value);
        if (memchr(value, ':', (size_t)(colon - value)) != NULL)
            return log_errbuf(err, errlen, "%s = '%s': write IPv6 addresses in brackets, e.g. [::1]:8080",
                        where, value);
        host_len = (size_t)(colon - value);
    }
    if (host_len == 0 || host_len >= CONFIG_HOST_MAX)
        return log_errbuf(err, errlen, "%s = '%s': the host is empty or too long", where, value);
    long long port;
    const char *rest;
    if (!parse_ll(colon + 1, &port, &rest) || *rest != '\0' || port < 1 || port > 65535)
        return log_errbuf(err, errlen, "%s = '%s': the port must be an integer from 1 to 65535", where,
                    value);
    if (strlen(value) >= sizeof c->listen)
        return log_errbuf(err, errlen, "%s: value too long", where);
    memcpy(c->host, host, host_len);
    c->host[host_len] = '\0';
    c->port = (int)port;
    strcpy(c->listen, value);
    return 0;
}

static config_model *find_model(config *c, const char *name)
{
    for (int i = 0; i < c->n_models; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return &c->models[i];
    return NULL;
}

static config_model *add_model(config *c, const char *name, char *err, size_t errlen)
{
    config_model *m = find_model(c, name);
    if (m != NULL)
        return m;
    if (!model_name_ok(name)) {
        log_errbuf(err, errlen,
             "model name '%s' is not allowed: use 1 to %d of A-Z a-z 0-9 _ . - "
             "(it appears in URLs)",
             name, CONFIG_NAME_MAX - 1);
        return NULL;
    }
    if (c->n_models >= CONFIG_MAX_MODELS) {
        log_errbuf(err, errlen, "too many models: at most %d", CONFIG_MAX_MODELS);
        return NULL;
    }
    config_model *grown = realloc(c->models, (size_t)(c->n_models + 1) * sizeof *grown);
    if (grown == NULL) {
        log_errbuf(err, errlen, "out of memory");
        return NULL;
    }
    c->models = grown;
    m = &c->models[c->n_models++];
    memset(m, 0, sizeof *m);
    strcpy(m->name, name);
    return m;
}

/* ---- public ------------------------------------------------------------------- */

int config_set(config *c, const char *section, const char *key, const char *value, char *err,
               size_t errlen)
{
    opt_scope scope;
    void *base;
    char where[CONFIG_NAME_MAX + 160];

    if (strcmp(section, "server") == 0) {
        scope = SCOPE_SERVER;
        base = c;
    } else if (strncmp(section, "model ", 6) == 0) {
        const char *name = section + 6;
        while (*name == ' ')
            name++;
        config_model *m = add_model(c, name, err, errlen);
        if (m == NULL)
            return -1;
        scope = SCOPE_MODEL;
        base = m;
    } else {
        return log_errbuf(err, errlen,
                    "unknown section [%.64s]: sections are [server] and [model NAME]", section);
    }

    const config_option *o = find_option(scope, key);
    if (o == NULL) {
        char keys[512];
        known_keys(scope, keys, sizeof keys);
        return log_errbuf(err, errlen, "unknown key '%.64s' in [%.80s]; known keys: %s", key, section,
                    keys);
    }
    snprintf(where, sizeof where, "[%.80s] %s", section, key);
    void *field = (char *)base + o->offset;

    switch (o->type) {
    case OPT_INT:
        return set_int(o, field, value, where, err, errlen);
    case OPT_BYTES:
        return set_bytes(o, field, value, where, err, errlen);
    case OPT_LISTEN:
        return parse_listen(c, value, where, err, errlen);
    case OPT_LOG_LEVEL: {
        log_level lvl;
        if (!log_level_parse(value, &lvl))
            return log_errbuf(err, errlen, "%s = '%s': expected debug, info, warn or error", where,
                        value);
        strcpy(c->log_level, value);
        return 0;
    }
    case OPT_FILE:
        if (strlen(value) >= PATH_MAX)
            return log_errbuf(err, errlen, "%s: path too long", where);
        strcpy((char *)field, value);
        return 0;
    case OPT_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0 || strcasecmp(value, no[i]) == 0) {
                *(int *)field = strcasecmp(value, yes[i]) == 0;
                return 0;
            }
        }
        return log_errbuf(err, errlen, "%s = '%.32s': expected yes or no", where, value);
    }
    case OPT_PATH:
        if (value[0] == '\0')
            return log_errbuf(err, errlen, "%s is empty: give the model directory", where);
        if (strlen(value) >= PATH_MAX)
            return log_errbuf(err, errlen, "%s: path too long", where);
        strcpy((char *)field, value);
        return 0;
    }
    return log_errbuf(err, errlen, "%s: internal error: unknown option type", where);
}

void config_defaults(config *c)
{
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_OPTIONS; i++) {
        if (options[i].scope != SCOPE_SERVER || options[i].def == NULL)
            continue;
        char err[CONFIG_ERR_MAX];
        /* Cannot fail: tests/check_config.c checks every default against its row. */
        if (config_set(c, "server", options[i].name, options[i].def, err, sizeof err) != 0)
            log_error("built-in default broken: %s", err);
    }
}

void config_free(config *c)
{
    free(c->models);
    c->models = NULL;
    c->n_models = 0;
}

/* ---- INI files ---------------------------------------------------------------- */

typedef struct ini_state {
    config *c;
    FILE *f;
    int line;            /* the line inih is looking at */
    bool line_too_long;
    int err_line;        /* first line a key was refused on, 0 if none */
    char err[CONFIG_ERR_MAX];
} ini_state;

/* fgets for inih that counts lines and stops at one that does not fit the buffer
 * (INI_MAX_LINE): inih would otherwise parse its tail as a line of its own. */
static char *config_ini_read(char *buf, int size, void *stream)
{
    ini_state *st = stream;
    if (fgets(buf, size, st->f) == NULL)
        return NULL;
    st->line++;
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] != '\n' && !feof(st->f)) {
        st->line_too_long = true;
        return NULL;
    }
    return buf;
}

static int config_ini_key(void *user, const char *section, const char *name, const char *value)
{
    ini_state *st = user;
    char msg[CONFIG_ERR_MAX];
    if (section[0] == '\0') {
        snprintf(msg, sizeof msg, "key '%.64s' before any section: put it under [server]", name);
    } else if (config_set(st->c, section, name, value, msg, sizeof msg) == 0) {
        return 1;
    }
    if (st->err_line == 0) {
        st->err_line = st->line;
        snprintf(st->err, sizeof st->err, "%s", msg);
    }
    return 0;
}

int config_load_file(config *c, const char *path, char *err, size_t errlen)
{
    ini_state st = {.c = c, .f = fopen(path, "r")};
    if (st.f == NULL)
        return log_errbuf(err, errlen, "cannot open config file '%s': %s", path, strerror(errno));
    int rc = ini_parse_stream(config_ini_read, &st, config_ini_key, &st);
    bool read_error = ferror(st.f) != 0;
    fclose(st.f);

    if (read_error)
        return log_errbuf(err, errlen, "%s: read error", path);
    if (st.line_too_long)
        return log_errbuf(err, errlen, "%s:%d: line longer than %d characters", path, st.line,
                    INI_MAX_LINE - 2);
    if (rc < 0)
        return log_errbuf(err, errlen, "%s: out of memory while parsing", path);
    if (rc > 0 && (st.err_line == 0 || rc < st.err_line))
        return log_errbuf(err, errlen,
                    "%s:%d: syntax error: expected '[section]', 'key = value' or a comment", path,
                    rc);
    if (st.err_line > 0)
        return log_errbuf(err, errlen, "%s:%d: %s", path, st.err_line, st.err);
    return 0;
}

/* ---- command line ------------------------------------------------------------- */

int config_add_model_arg(config *c, const char *arg, char *err, size_t errlen)
{
    const char *eq = strchr(arg, '=');
    if (eq == NULL || eq == arg || eq[1] == '\0')
        return log_errbuf(err, errlen,
                    "--model '%s': expected NAME=DIR, e.g. --model fashion=models/fashion", arg);
    char section[CONFIG_NAME_MAX + 8];
    size_t name_len = (size_t)(eq - arg);
    if (name_len >= CONFIG_NAME_MAX)
        return log_errbuf(err, errlen, "--model '%s': the name is longer than %d characters", arg,
                    CONFIG_NAME_MAX - 1);
    snprintf(section, sizeof section, "model %.*s", (int)name_len, arg);
    char msg[CONFIG_ERR_MAX];
    if (config_set(c, section, "path", eq + 1, msg, sizeof msg) != 0)
        return log_errbuf(err, errlen, "--model: %s", msg);
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int config_finish(config *c, char *err, size_t errlen)
{
    if (c->n_models == 0) {
        /* The models a fresh clone (or an installed copy) serves with no setting at
         * all: every default present, from the first place holding the classifier. */
        static const char *const bases[] = {"./models", MODELD_PKGDATADIR "/models"};
        static const char *const defaults[] = {"fashion", "bert", "fashion-gan"};
        const char *base = NULL;
        char dir[PATH_MAX];
        for (size_t i = 0; i < sizeof bases / sizeof bases[0] && !base; i++) {
            snprintf(dir, sizeof dir, "%s/%s", bases[i], defaults[0]);
            if (is_dir(dir))
                base = bases[i];
        }
        if (base == NULL)
            return log_errbuf(err, errlen,
                        "no model configured and no default model at %s/%s or %s/%s; "
                        "pass --model NAME=DIR or add a [model NAME] section",
                        bases[0], defaults[0], bases[1], defaults[0]);
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
            snprintf(dir, sizeof dir, "%s/%s", base, defaults[i]);
            char section[CONFIG_NAME_MAX + 8];
            snprintf(section, sizeof section, "model %s", defaults[i]);
            if (is_dir(dir) && config_set(c, section, "path", dir, err, errlen) != 0)
                return -1;
        }
    }
    if ((long long)c->max_queue_delay_us >= (long long)c->request_timeout_ms * 1000)
        return log_errbuf(err, errlen,
                    "max_queue_delay_us (%d) must be less than request_timeout_ms (%d) in "
                    "microseconds, or requests would expire while waiting for a batch",
                    c->max_queue_delay_us, c->request_timeout_ms);
    if (c->request_timeout_ms > c->max_request_timeout_ms)
        return log_errbuf(err, errlen,
                          "request_timeout_ms (%d) must not exceed max_request_timeout_ms (%d)",
                          c->request_timeout_ms, c->max_request_timeout_ms);
    for (int i = 0; i < c->n_models; i++) {
        config_model *m = &c->models[i];
        if (m->path[0] == '\0')
            return log_errbuf(err, errlen, "[model %s] has no path: add 'path = DIR'", m->name);
        if (m->workers == 0)
            m->workers = c->workers;
        if (m->max_batch_size == 0)
            m->max_batch_size = c->max_batch_size;
        if (m->max_batch_tokens == 0) /* may stay 0: derived from the model at load */
            m->max_batch_tokens = c->max_batch_tokens;
        if (m->queue_capacity == 0)
            m->queue_capacity = c->queue_capacity;
    }
    return 0;
}

/* The flags that take a value, as "--flag VALUE" or "--flag=VALUE". */
static const char *const value_flags[] = {"--config", "--listen", "--model"};

/* If argv[*i] is a value flag: its name and value, *i moved past the value, and 1.
 * 0 if it is something else; -1 with a message if the value is missing. */
static int value_flag(int argc, char **argv, int *i, const char **flag, const char **value,
                      char *err, size_t errlen)
{
    const char *a = argv[*i];
    for (size_t k = 0; k < sizeof value_flags / sizeof value_flags[0]; k++) {
        size_t n = strlen(value_flags[k]);
        if (strncmp(a, value_flags[k], n) != 0)
            continue;
        if (a[n] == '=') {
            *flag = value_flags[k];
            *value = a + n + 1;
            return 1;
        }
        if (a[n] != '\0')
            continue;
        if (*i + 1 >= argc)
            return log_errbuf(err, errlen, "%s needs a value; see --help", value_flags[k]);
        *flag = value_flags[k];
        *value = argv[++*i];
        return 1;
    }
    return 0;
}

/* If argv[*i] is --check-config: the FILE after it, if any, in *path (NULL if none),
 * *i moved past it, and 1.  The FILE is optional, so it is the next argument only
 * when that is not a flag; "--check-config=FILE" says it explicitly.  0 if argv[*i]
 * is something else; -1 with a message for "--check-config=" with nothing after. */
static int check_flag(int argc, char **argv, int *i, const char **path, char *err,
                      size_t errlen)
{
    static const char name[] = "--check-config";
    const char *a = argv[*i];
    size_t n = sizeof name - 1;
    if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '='))
        return 0;
    *path = NULL;
    if (a[n] == '=') {
        if (a[n + 1] == '\0')
            return log_errbuf(err, errlen, "--check-config= needs a FILE; see --help");
        *path = a + n + 1;
    } else if (*i + 1 < argc && argv[*i + 1][0] != '-') {
        *path = argv[++*i];
    }
    return 1;
}

int config_from_args(config *c, int argc, char **argv, config_action *action, char *err,
                     size_t errlen)
{
    config_defaults(c);
    *action = CONFIG_ACTION_RUN;
    const char *config_path = NULL;
    const char *flag, *value;

    /* Pass 1: --help/--version win, unknown arguments fail early, and --config is
     * found first so that flags override the file whatever their order. */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *action = CONFIG_ACTION_HELP;
            return 0;
        }
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            *action = CONFIG_ACTION_VERSION;
            return 0;
        }
        const char *check_path;
        int r = check_flag(argc, argv, &i, &check_path, err, errlen);
        if (r < 0)
            return -1;
        if (r > 0) {
            *action = CONFIG_ACTION_CHECK;
            if (check_path == NULL)
                continue;
            if (config_path != NULL)
                return log_errbuf(err, errlen, "two config files: --check-config FILE reads "
                                               "FILE as --config does, give one of them");
            config_path = check_path;
            continue;
        }
        r = value_flag(argc, argv, &i, &flag, &value, err, errlen);
        if (r < 0)
            return -1;
        if (r == 0) {
            if (a[0] == '-')
                return log_errbuf(err, errlen, "unknown option '%s'; see --help", a);
            return log_errbuf(err, errlen, "unexpected argument '%s'; see --help", a);
        }
        if (strcmp(flag, "--config") == 0) {
            if (config_path != NULL)
                return log_errbuf(err, errlen, "two config files: --config given twice, or "
                                               "with --check-config FILE");
            config_path = value;
        }
    }

    if (config_path != NULL && config_load_file(c, config_path, err, errlen) != 0)
        return -1;

    /* Pass 2: the other flags, on top of the file. */
    for (int i = 1; i < argc; i++) {
        const char *check_path;
        if (check_flag(argc, argv, &i, &check_path, err, errlen) != 0)
            continue; /* its FILE, if any, is not a flag's value */
        if (value_flag(argc, argv, &i, &flag, &value, err, errlen) != 1)
            continue;
        if (strcmp(flag, "--listen") == 0) {
            char msg[CONFIG_ERR_MAX];
            if (config_set(c, "server", "listen", value, msg, sizeof msg) != 0)
                return log_errbuf(err, errlen, "--listen: %s", msg);
        } else if (strcmp(flag, "--model") == 0) {
            if (config_add_model_arg(c, value, err, errlen) != 0)
                return -1;
        }
    }
    return config_finish(c, err, errlen);
}

int config_blas_threads(const config *c, int cores)
{
    if (c->blas_threads > 0)
        return c->blas_threads;
    int workers = 0;
    for (int i = 0; i < c->n_models; i++)
        workers += c->models[i].workers > 0 ? c->models[i].workers : c->workers;
    if (workers < 1)
        workers = 1;
    int n = cores / workers;
    return n < 1 ? 1 : n;
}

const char *config_key_name(int i, const char **section)
{
    if (i < 0 || i >= N_OPTIONS)
        return NULL;
    if (section != NULL)
        *section = scope_name(options[i].scope);
    return options[i].name;
}

void config_usage(FILE *out)
{
    fprintf(out,
            "Usage: modeld [--config FILE] [--listen HOST:PORT] [--model NAME=DIR]...\n"
            "       modeld --check-config [FILE] [--model NAME=DIR]...\n"
            "Serves image classification, fill-mask and image generation models over HTTP\n"
            "(see README.md).\n"
            "\n"
            "  --config FILE        read settings from an INI file (see conf/modeld.conf)\n"
            "  --listen HOST:PORT   address to serve on (default 127.0.0.1:8080)\n"
            "  --model NAME=DIR     serve the model directory DIR as NAME; repeatable\n"
            "  --check-config [FILE]\n"
            "                       check the settings (FILE as with --config) and load\n"
            "                       every model, then exit without serving: 0 and\n"
            "                       \"config OK: N models\", or 2 and the problem\n"
            "  --help, --version\n"
            "\n"
            "Flags override the file.  With no model anywhere, the default models\n"
            "(fashion, bert, fashion-gan: those present) are served from ./models or\n"
            "%s/models.\n"
            "Exit status: 0 after SIGTERM/SIGINT, 1 start-up failure, 2 bad usage or settings.\n"
            "\n"
            "Settings ([server] and [model NAME] sections of the file):\n",
            MODELD_PKGDATADIR);
    for (int i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &options[i];
        char def[64];
        if (o->def != NULL)
            snprintf(def, sizeof def, "%s", o->def);
        else
            snprintf(def, sizeof def, "%s", o->type == OPT_PATH ? "(required)" : "(inherited)");
        fprintf(out, "  [%s] %s = %s", scope_name(o->scope), o->name, def);
        if (o->type == OPT_INT || o->type == OPT_BYTES)
            fprintf(out, "   (%lld..%lld)", o->min, o->max);
        fprintf(out, "\n      %s\n", o->doc);
    }
}
