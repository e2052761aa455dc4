/* config.h — the daemon's settings: one table of keys (config.c), read from an INI
 * file and the command line.
 *
 * Use:  config cfg;  config_action act;  char err[CONFIG_ERR_MAX];
 *       if (config_from_args(&cfg, argc, argv, &act, err, sizeof err) != 0) { print err; exit 2; }
 *       ... cfg.http_threads, cfg.models[i].workers (inherited values already filled in) ...
 *       config_free(&cfg);
 * Ownership: a config owns its models array; config_free() releases it.
 * Precedence: built-in defaults < the --config file < command-line flags.
 * SIGHUP re-runs config_from_args() and serves the new models (main.c); the keys
 * the HTTP server copies at start take a restart.
 */
#ifndef MODELD_DAEMON_CONFIG_H
#define MODELD_DAEMON_CONFIG_H

#include <limits.h>
#include <stdio.h>

#define CONFIG_NAME_MAX 64      /* model names appear in URLs: [A-Za-z0-9_.-], < 64 */
#define CONFIG_HOST_MAX 256
#define CONFIG_MAX_MODELS 64
#define CONFIG_ERR_MAX 1024

typedef struct config_model {
    char name[CONFIG_NAME_MAX];
    char path[PATH_MAX];
    /* Per-model overrides: 0 means "not set", and config_finish() replaces every
     * 0 with the [server] value. */
    int workers;
    int max_batch_size;
    int max_batch_tokens;             /* may stay 0 after config_finish(): derived at load */
    int queue_capacity;
} config_model;

typedef struct config {
    /* [server] */
    char listen[CONFIG_HOST_MAX + 8]; /* "HOST:PORT" as written */
    char host[CONFIG_HOST_MAX];       /* parsed from listen; IPv6 without brackets */
    int port;
    int http_threads;
    long long max_body_bytes;
    int workers;                      /* per model */
    int blas_threads;                 /* 0: auto, see config_blas_threads() */
    int queue_capacity;               /* queued requests per model */
    int max_batch_size;               /* images or sequences per forward pass */
    int max_batch_tokens;             /* BERT tokens per forward pass; 0: derived */
    int max_images_per_request;
    int max_generate_images;
    int request_timeout_ms;
    int max_request_timeout_ms;       /* bound of a request's own X-Request-Timeout-Ms */
    int max_queue_delay_us;
    int shutdown_timeout_ms;          /* SIGTERM: how long queued work may still run */
    char log_level[16];
    int access_log;                   /* bool: one log line per request */
    char auth_token_file[PATH_MAX];   /* "" = no authentication */
    int auth_open_health;             /* bool */
    int auth_open_metrics;            /* bool */
    /* [model NAME] sections and --model flags */
    config_model *models;
    int n_models;
} config;

typedef enum config_action {
    CONFIG_ACTION_RUN = 0,
    CONFIG_ACTION_HELP,
    CONFIG_ACTION_VERSION,
    CONFIG_ACTION_CHECK,    /* --check-config [FILE]: load everything, serve nothing */
} config_action;

/* Built-in defaults, no models. */
void config_defaults(config *c);
void config_free(config *c);

/* Sets one key of section "server" or "model NAME" from its text form, checking
 * type and bounds against the table.  0, or -1 with a message in err. */
int config_set(config *c, const char *section, const char *key, const char *value, char *err,
               size_t errlen);

/* Reads an INI file into c (on top of what c holds).  Errors name the file and line. */
int config_load_file(config *c, const char *path, char *err, size_t errlen);

/* Adds or updates the model from a "NAME=DIR" command-line value. */
int config_add_model_arg(config *c, const char *name_eq_dir, char *err, size_t errlen);

/* Cross-key checks once everything is read: every model has a path, and the
 * per-model overrides left at 0 take the [server] values.  With no model at all,
 * `fashion` is served from the first of ./models/fashion and
 * MODELD_PKGDATADIR/models/fashion that exists. */
int config_finish(config *c, char *err, size_t errlen);

/* The whole start-up path: defaults, --config FILE, then --listen/--model, then
 * config_finish().  --help and --version only set *action.  --check-config [FILE]
 * sets it too, reads FILE as --config would, and goes through the whole path. */
int config_from_args(config *c, int argc, char **argv, config_action *action, char *err,
                     size_t errlen);

/* BLAS threads per forward pass: blas_threads if set, else cores / (workers of all
 * models), at least 1, so that workers x BLAS threads <= cores. */
int config_blas_threads(const config *c, int cores);

/* --help text: usage, flags and every key of the table with its default and bounds. */
void config_usage(FILE *out);

/* Table access for documentation tests: the i-th key ("server.listen",
 * "model.path"), NULL past the end. */
const char *config_key_name(int i, const char **section);

#endif
