/* check_config.c — the settings table, INI files, flags and their precedence.
 *
 * Files are written to a fresh temporary directory per test; the default-model
 * tests chdir() into it and teardown goes back, so CK_FORK=no (valgrind) works.
 */
#include <config.h>

#include <check.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/config.h"

static char tmpdir[PATH_MAX], oldcwd[PATH_MAX];

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/check_config.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
    ck_assert_ptr_nonnull(getcwd(oldcwd, sizeof oldcwd));
}

static void teardown(void)
{
    /* Tests may chdir into tmpdir; with CK_FORK=no that would outlive them. */
    if (chdir(oldcwd) != 0)
        fprintf(stderr, "could not return to %s\n", oldcwd);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* Writes text to tmpdir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static int from_args(config *c, config_action *act, char *err, ...)
{
    char *argv[32] = {"modeld"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = a;
    va_end(ap);
    return config_from_args(c, argc, argv, act, err, CONFIG_ERR_MAX);
}

/* Loads text as a config file into defaults; returns the status, message in err. */
static int load_text(config *c, const char *text, char *err)
{
    config_defaults(c);
    return config_load_file(c, write_file("t.conf", text), err, CONFIG_ERR_MAX);
}

#define ck_assert_contains(hay, needle)                                                    \
    ck_assert_msg(strstr((hay), (needle)) != NULL, "'%s' does not contain '%s'", (hay),    \
                  (needle))

START_TEST(defaults)
{
    config c;
    config_defaults(&c);
    ck_assert_str_eq(c.listen, "127.0.0.1:8080");
    ck_assert_str_eq(c.host, "127.0.0.1");
    ck_assert_int_eq(c.port, 8080);
    ck_assert_int_eq(c.http_threads, 4);
    ck_assert_int_eq(c.max_body_bytes, 8 * 1024 * 1024);
    ck_assert_int_eq(c.workers, 1);
    ck_assert_int_eq(c.blas_threads, 0);
    ck_assert_int_eq(c.queue_capacity, 256);
    ck_assert_int_eq(c.max_batch_size, 16);
    ck_assert_int_eq(c.max_images_per_request, 256);
    ck_assert_int_eq(c.request_timeout_ms, 30000);
    ck_assert_int_eq(c.max_queue_delay_us, 0);
    ck_assert_str_eq(c.log_level, "info");
    ck_assert_int_eq(c.n_models, 0);
    config_free(&c);
}
END_TEST

START_TEST(file_parse)
{
    config c;
    char err[CONFIG_ERR_MAX];
    const char *text = "# comment\n"
                       "; another\n"
                       "[server]\n"
                       "listen = 0.0.0.0:9000\n"
                       "http_threads = 8\n"
                       "max_body_bytes = 512K\n"
                       "workers = 2\n"
                       "blas_threads = 3\n"
                       "queue_capacity = 10\n"
                       "max_batch_size = 32\n"
                       "max_images_per_request = 7\n"
                       "request_timeout_ms = 1500\n"
                       "max_queue_delay_us = 250\n"
                       "log_level = debug\n"
                       "\n"
                       "[model a]\n"
                       "path = /models/a\n"
                       "workers = 4\n"
                       "[model b.v2]\n"
                       "path = /models/b\n"
                       "max_batch_size = 64\n"
                       "queue_capacity = 5\n";
    ck_assert_msg(load_text(&c, text, err) == 0, "%s", err);
    ck_assert_int_eq(config_finish(&c, err, sizeof err), 0);
    ck_assert_str_eq(c.host, "0.0.0.0");
    ck_assert_int_eq(c.port, 9000);
    ck_assert_int_eq(c.http_threads, 8);
    ck_assert_int_eq(c.max_body_bytes, 512 * 1024);
    ck_assert_int_eq(c.workers, 2);
    ck_assert_int_eq(c.blas_threads, 3);
    ck_assert_int_eq(c.queue_capacity, 10);
    ck_assert_int_eq(c.max_batch_size, 32);
    ck_assert_int_eq(c.max_images_per_request, 7);
    ck_assert_int_eq(c.request_timeout_ms, 1500);
    ck_assert_int_eq(c.max_queue_delay_us, 250);
    ck_assert_str_eq(c.log_level, "debug");
    ck_assert_int_eq(c.n_models, 2);
    ck_assert_str_eq(c.models[0].name, "a");
    ck_assert_str_eq(c.models[0].path, "/models/a");
    ck_assert_int_eq(c.models[0].workers, 4);
    ck_assert_int_eq(c.models[0].max_batch_size, 32); /* inherited */
    ck_assert_int_eq(c.models[0].queue_capacity, 10);
    ck_assert_str_eq(c.models[1].name, "b.v2");
    ck_assert_int_eq(c.models[1].workers, 2);
    ck_assert_int_eq(c.models[1].max_batch_size, 64);
    ck_assert_int_eq(c.models[1].queue_capacity, 5);
    config_free(&c);
}
END_TEST

START_TEST(byte_sizes)
{
    static const struct {
        const char *text;
        long long bytes;
    } ok[] = {{"64", 64},           {"1k", 1024},        {"512K", 512 * 1024},
              {"8M", 8 << 20},      {"8MiB", 8 << 20},   {"8mb", 8 << 20},
              {"1G", 1LL << 30},    {"1GiB", 1LL << 30}, {"1048576", 1 << 20}};
    static const char *const bad[] = {"", "8X", "-1", "63", "2G", "8 M", "M", "8MiBs",
                                      "99999999999999999999", "9999999999G"};
    config c;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        ck_assert_msg(config_set(&c, "server", "max_body_bytes", ok[i].text, err, sizeof err) == 0,
                      "%s: %s", ok[i].text, err);
        ck_assert_int_eq(c.max_body_bytes, ok[i].bytes);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(config_set(&c, "server", "max_body_bytes", bad[i], err, sizeof err) != 0,
                      "'%s' accepted", bad[i]);
        ck_assert_contains(err, "max_body_bytes");
    }
    config_free(&c);
}
END_TEST

START_TEST(listen_forms)
{
    config c;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    ck_assert_int_eq(config_set(&c, "server", "listen", "[::1]:8081", err, sizeof err), 0);
    ck_assert_str_eq(c.host, "::1");
    ck_assert_int_eq(c.port, 8081);
    ck_assert_int_eq(config_set(&c, "server", "listen", "localhost:1", err, sizeof err), 0);
    ck_assert_str_eq(c.host, "localhost");
    ck_assert_int_eq(c.port, 1);
    static const char *const bad[] = {"8080",       "::1:8080",  "host:0",    "host:65536",
                                      ":80",        "[::1]8080", "[::1",      "host:",
                                      "host:80x",   "[]:80",     "host:-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(config_set(&c, "server", "listen", bad[i], err, sizeof err) != 0,
                      "'%s' accepted", bad[i]);
        ck_assert_contains(err, "listen");
    }
    /* A refused value leaves the previous one. */
    ck_assert_str_eq(c.listen, "localhost:1");
    config_free(&c);
}
END_TEST

START_TEST(bounds_errors)
{
    static const struct {
        const char *key, *value, *expect;
    } cases[] = {
        {"http_threads", "0", "allowed 1 to 256"},
        {"http_threads", "257", "allowed 1 to 256"},
        {"workers", "-3", "allowed 1 to 256"},
        {"blas_threads", "-1", "allowed 0 to 256"},
        {"queue_capacity", "0", "allowed 1 to 1000000"},
        {"max_batch_size", "5000", "allowed 1 to 4096"},
        {"max_images_per_request", "0", "allowed 1 to 100000"},
        {"request_timeout_ms", "0", "allowed 1 to 3600000"},
        {"max_request_timeout_ms", "3600001", "allowed 1 to 3600000"},
        {"max_queue_delay_us", "1000001", "allowed 0 to 1000000"},
        {"workers", "two", "expected an integer"},
        {"workers", "2.5", "expected an integer"},
        {"workers", "", "expected an integer"},
        {"workers", "99999999999999999999", "expected an integer"},
        {"log_level", "verbose", "expected debug, info, warn or error"},
    };
    config c;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_msg(config_set(&c, "server", cases[i].key, cases[i].value, err, sizeof err) != 0,
                      "%s = %s accepted", cases[i].key, cases[i].value);
        ck_assert_contains(err, cases[i].key);
        ck_assert_contains(err, cases[i].expect);
    }
    config_free(&c);
}
END_TEST

START_TEST(file_errors_name_the_line)
{
    static const struct {
        const char *text, *expect;
    } cases[] = {
        {"[server]\nhttp_threads = 4\nbogus = 1\n", "t.conf:3: unknown key 'bogus' in [server]"},
        {"[server]\n\n\nhttp_threads = 0\n", "t.conf:4: [server] http_threads = 0 is out of range"},
        {"[sever]\nworkers = 1\n", "t.conf:2: unknown section [sever]"},
        {"workers = 1\n", "t.conf:1: key 'workers' before any section"},
        {"[server]\nworkers 1\n", "t.conf:2: syntax error"},
        {"[server\n", "t.conf:1: syntax error"},
        {"[model a]\npath = /x\ncolour = red\n", "t.conf:3: unknown key 'colour' in [model a]"},
        {"[model a b]\npath = /x\n", "t.conf:2: model name 'a b' is not allowed"},
        {"[model ..]\npath = /x\n", "model name '..' is not allowed"},
        {"[model a]\nworkers = 0\n", "t.conf:2: [model a] workers = 0 is out of range"},
        /* The first problem is reported, whichever kind it is. */
        {"[server]\nnope\nbogus = 1\n", "t.conf:2: syntax error"},
        {"[server]\nbogus = 1\nnope\n", "t.conf:2: unknown key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config c;
        char err[CONFIG_ERR_MAX] = "";
        ck_assert_msg(load_text(&c, cases[i].text, err) != 0, "accepted: %s", cases[i].text);
        ck_assert_contains(err, cases[i].expect);
        config_free(&c);
    }
}
END_TEST

START_TEST(unknown_key_lists_known_ones)
{
    config c;
    char err[CONFIG_ERR_MAX];
    ck_assert_int_ne(load_text(&c, "[server]\nthreads = 2\n", err), 0);
    ck_assert_contains(err, "known keys: listen, http_threads, max_body_bytes");
    config_free(&c);
}
END_TEST

START_TEST(long_line_refused)
{
    char text[600];
    snprintf(text, sizeof text, "[model a]\npath = /%0300d\n", 0);
    config c;
    char err[CONFIG_ERR_MAX];
    ck_assert_int_ne(load_text(&c, text, err), 0);
    ck_assert_contains(err, "t.conf:2: line longer than");
    config_free(&c);
}
END_TEST

START_TEST(missing_file)
{
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;
    ck_assert_int_ne(from_args(&c, &act, err, "--config", "/nonexistent/modeld.conf", NULL), 0);
    ck_assert_contains(err, "cannot open config file '/nonexistent/modeld.conf'");
    config_free(&c);
}
END_TEST

START_TEST(cli_overrides_file)
{
    const char *path = write_file("o.conf", "[server]\n"
                                            "listen = 127.0.0.1:9000\n"
                                            "workers = 3\n"
                                            "[model a]\n"
                                            "path = /from/file\n"
                                            "max_batch_size = 8\n"
                                            "[model b]\n"
                                            "path = /b\n");
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;
    /* Flag order does not matter: --config is read first. */
    ck_assert_msg(from_args(&c, &act, err, "--listen", "127.0.0.1:9100", "--model=a=/from/cli",
                            "--config", path, "--model", "c=/c", NULL) == 0,
                  "%s", err);
    ck_assert_int_eq(act, CONFIG_ACTION_RUN);
    ck_assert_int_eq(c.port, 9100);
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(c.n_models, 3);
    ck_assert_str_eq(c.models[0].name, "a");
    ck_assert_str_eq(c.models[0].path, "/from/cli");
    ck_assert_int_eq(c.models[0].max_batch_size, 8); /* the file's override survives */
    ck_assert_str_eq(c.models[1].path, "/b");
    ck_assert_str_eq(c.models[2].name, "c");
    ck_assert_int_eq(c.models[2].workers, 3);
    config_free(&c);
}
END_TEST

START_TEST(cli_errors)
{
    static const struct {
        const char *a, *b, *expect;
    } cases[] = {
        {"--bogus", NULL, "unknown option '--bogus'"},
        {"extra", NULL, "unexpected argument 'extra'"},
        {"--listen", NULL, "--listen needs a value"},
        {"--model", NULL, "--model needs a value"},
        {"--config", NULL, "--config needs a value"},
        {"--model", "fashion", "expected NAME=DIR"},
        {"--model", "=dir", "expected NAME=DIR"},
        {"--model", "a=", "expected NAME=DIR"},
        {"--model", "bad/name=dir", "model name 'bad/name' is not allowed"},
        {"--listen", "nowhere", "--listen: [server] listen = 'nowhere'"},
        {"--listenx=1", NULL, "unknown option"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        config c;
        char err[CONFIG_ERR_MAX] = "";
        config_action act;
        ck_assert_msg(from_args(&c, &act, err, cases[i].a, cases[i].b, NULL) != 0, "accepted %s",
                      cases[i].a);
        ck_assert_contains(err, cases[i].expect);
        config_free(&c);
    }
}
END_TEST

START_TEST(help_and_version)
{
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;
    ck_assert_int_eq(from_args(&c, &act, err, "--help", NULL), 0);
    ck_assert_int_eq(act, CONFIG_ACTION_HELP);
    config_free(&c);
    /* --help wins over arguments it would otherwise refuse. */
    ck_assert_int_eq(from_args(&c, &act, err, "--listen", "bad", "-h", NULL), 0);
    ck_assert_int_eq(act, CONFIG_ACTION_HELP);
    config_free(&c);
    ck_assert_int_eq(from_args(&c, &act, err, "--version", NULL), 0);
    ck_assert_int_eq(act, CONFIG_ACTION_VERSION);
    config_free(&c);

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_usage(f);
    fclose(f);
    for (int i = 0; config_key_name(i, NULL) != NULL; i++)
        ck_assert_contains(text, config_key_name(i, NULL));
    ck_assert_contains(text, "--model NAME=DIR");
    free(text);
}
END_TEST

/* --check-config [FILE]: FILE is optional, so it is taken only when it is not a flag. */
START_TEST(check_config_flag)
{
    const char *path = write_file("k.conf", "[server]\nworkers = 3\n[model a]\npath = /a\n");
    char eq[PATH_MAX + 32];
    snprintf(eq, sizeof eq, "--check-config=%s", path);
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;

    ck_assert_msg(from_args(&c, &act, err, "--check-config", path, NULL) == 0, "%s", err);
    ck_assert_int_eq(act, CONFIG_ACTION_CHECK);
    ck_assert_int_eq(c.workers, 3);
    ck_assert_int_eq(c.n_models, 1);
    config_free(&c);
    ck_assert_msg(from_args(&c, &act, err, eq, "--model", "b=/b", NULL) == 0, "%s", err);
    ck_assert_int_eq(act, CONFIG_ACTION_CHECK);
    ck_assert_int_eq(c.n_models, 2);
    config_free(&c);
    /* Without FILE, whatever else the command line says is checked. */
    ck_assert_msg(from_args(&c, &act, err, "--check-config", "--listen", "127.0.0.1:9000",
                            "--config", path, NULL) == 0,
                  "%s", err);
    ck_assert_int_eq(act, CONFIG_ACTION_CHECK);
    ck_assert_int_eq(c.port, 9000);
    ck_assert_int_eq(c.workers, 3);
    config_free(&c);
    ck_assert_msg(from_args(&c, &act, err, "--model", "m=/m", "--check-config", NULL) == 0, "%s",
                  err);
    ck_assert_int_eq(act, CONFIG_ACTION_CHECK);
    ck_assert_str_eq(c.models[0].path, "/m");
    config_free(&c);
    /* --help still wins. */
    ck_assert_int_eq(from_args(&c, &act, err, "--check-config", path, "--help", NULL), 0);
    ck_assert_int_eq(act, CONFIG_ACTION_HELP);
    config_free(&c);

    /* Each refused command line, and the message it must get. */
#define REFUSED(expect, ...)                                                               \
    do {                                                                                   \
        err[0] = '\0';                                                                     \
        ck_assert_msg(from_args(&c, &act, err, __VA_ARGS__, NULL) != 0, "accepted: %s",    \
                      expect);                                                             \
        ck_assert_contains(err, expect);                                                   \
        config_free(&c);                                                                   \
    } while (0)
    REFUSED("two config files", "--check-config", path, "--config", path);
    REFUSED("two config files", "--config", path, eq);
    REFUSED("--check-config= needs a FILE", "--check-config=");
    REFUSED("unknown option '--check-configx'", "--check-configx");
    REFUSED("cannot open config file", "--check-config", "/nonexistent/m.conf");
#undef REFUSED
}
END_TEST

START_TEST(default_model_from_source_tree)
{
    ck_assert_int_eq(chdir(tmpdir), 0);
    ck_assert_int_eq(mkdir("models", 0755), 0);
    ck_assert_int_eq(mkdir("models/fashion", 0755), 0);
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;
    ck_assert_msg(from_args(&c, &act, err, NULL) == 0, "%s", err);
    ck_assert_int_eq(c.n_models, 1);
    ck_assert_str_eq(c.models[0].name, "fashion");
    ck_assert_str_eq(c.models[0].path, "./models/fashion");
    ck_assert_str_eq(c.listen, "127.0.0.1:8080");
    config_free(&c);
    /* A config file without models also falls back to the default. */
    const char *path = write_file("s.conf", "[server]\nworkers = 2\n");
    ck_assert_msg(from_args(&c, &act, err, "--config", path, NULL) == 0, "%s", err);
    ck_assert_int_eq(c.n_models, 1);
    ck_assert_int_eq(c.models[0].workers, 2);
    config_free(&c);
}
END_TEST

START_TEST(no_default_model)
{
    struct stat st;
    if (stat(MODELD_PKGDATADIR "/models/fashion", &st) == 0)
        return; /* installed: the default exists, nothing to refuse */
    ck_assert_int_eq(chdir(tmpdir), 0);
    config c;
    char err[CONFIG_ERR_MAX];
    config_action act;
    ck_assert_int_ne(from_args(&c, &act, err, NULL), 0);
    ck_assert_contains(err, "no model configured");
    ck_assert_contains(err, "--model NAME=DIR");
    config_free(&c);
}
END_TEST

START_TEST(model_needs_path)
{
    config c;
    char err[CONFIG_ERR_MAX];
    ck_assert_int_eq(load_text(&c, "[model a]\nworkers = 2\n", err), 0);
    ck_assert_int_ne(config_finish(&c, err, sizeof err), 0);
    ck_assert_contains(err, "[model a] has no path");
    config_free(&c);
}
END_TEST

START_TEST(delay_must_be_below_timeout)
{
    config c;
    char err[CONFIG_ERR_MAX];
    ck_assert_int_eq(load_text(&c,
                               "[server]\nrequest_timeout_ms = 1\nmax_queue_delay_us = 1000\n"
                               "[model a]\npath = /a\n",
                               err),
                     0);
    ck_assert_int_ne(config_finish(&c, err, sizeof err), 0);
    ck_assert_contains(err, "max_queue_delay_us (1000) must be less than request_timeout_ms");
    config_free(&c);
}
END_TEST

START_TEST(timeout_within_its_maximum)
{
    config c;
    char err[CONFIG_ERR_MAX];
    ck_assert_int_eq(load_text(&c,
                               "[server]\nrequest_timeout_ms = 5000\nmax_request_timeout_ms = 4000\n"
                               "[model a]\npath = /a\n",
                               err),
                     0);
    ck_assert_int_ne(config_finish(&c, err, sizeof err), 0);
    ck_assert_contains(err, "request_timeout_ms (5000) must not exceed max_request_timeout_ms (4000)");
    config_free(&c);
}
END_TEST

START_TEST(too_many_models)
{
    config c;
    char err[CONFIG_ERR_MAX], arg[64];
    config_defaults(&c);
    for (int i = 0; i < CONFIG_MAX_MODELS; i++) {
        snprintf(arg, sizeof arg, "m%d=/m", i);
        ck_assert_int_eq(config_add_model_arg(&c, arg, err, sizeof err), 0);
    }
    ck_assert_int_ne(config_add_model_arg(&c, "one_more=/m", err, sizeof err), 0);
    ck_assert_contains(err, "too many models");
    config_free(&c);
}
END_TEST

START_TEST(blas_budget)
{
    config c;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    ck_assert_int_eq(config_add_model_arg(&c, "a=/a", err, sizeof err), 0);
    ck_assert_int_eq(config_add_model_arg(&c, "b=/b", err, sizeof err), 0);
    c.models[1].workers = 3;
    ck_assert_int_eq(config_finish(&c, err, sizeof err), 0);
    ck_assert_int_eq(config_blas_threads(&c, 16), 4); /* 16 cores / (1 + 3) workers */
    ck_assert_int_eq(config_blas_threads(&c, 2), 1);  /* never below 1 */
    c.blas_threads = 6;
    ck_assert_int_eq(config_blas_threads(&c, 2), 6);  /* explicit wins */
    config_free(&c);
}
END_TEST

/* The text of $dir_var/rel (a shipped or built document) into text, its path into path. */
static void read_doc(const char *dir_var, const char *rel, char *path, char *text, size_t cap)
{
    const char *dir = getenv(dir_var);
    snprintf(path, PATH_MAX, "%s/%s", dir ? dir : ".", rel);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "cannot open %s (make writes the built ones; set %s)", path,
                  dir_var);
    size_t n = fread(text, 1, cap - 1, f);
    text[n] = '\0';
    fclose(f);
}

/* conf/modeld.conf documents every key and, as shipped, means the defaults. */
START_TEST(shipped_conf_documents_every_key)
{
    char path[PATH_MAX];
    static char text[65536];
    read_doc("top_srcdir", "conf/modeld.conf", path, text, sizeof text);
    for (int i = 0; config_key_name(i, NULL) != NULL; i++) {
        const char *section;
        const char *key = config_key_name(i, &section);
        char want[96];
        if (strcmp(section, "server") == 0)
            snprintf(want, sizeof want, "\n#%s =", key); /* "#key =" alone: empty default */
        else
            snprintf(want, sizeof want, "\n# %s ", key);
        ck_assert_msg(strstr(text, want) != NULL, "%s does not document %s.%s", path, section,
                      key);
    }
    config c, d;
    char err[CONFIG_ERR_MAX];
    config_defaults(&c);
    config_defaults(&d);
    ck_assert_msg(config_load_file(&c, path, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(c.n_models, 0);
    ck_assert_mem_eq(&c, &d, sizeof c);
    config_free(&c);
    config_free(&d);
}
END_TEST

/* The man page modeld.conf(5), as make writes it, has an entry for every key. */
START_TEST(man_page_documents_every_key)
{
    char path[PATH_MAX];
    static char text[65536];
    read_doc("top_builddir", "man/modeld.conf.5", path, text, sizeof text);
    for (int i = 0; config_key_name(i, NULL) != NULL; i++) {
        const char *section;
        const char *key = config_key_name(i, &section);
        char want[96];
        snprintf(want, sizeof want, "\n.BR %s \"", key); /* .BR key " = VALUE (default ...)" */
        ck_assert_msg(strstr(text, want) != NULL, "%s has no entry for %s.%s", path, section,
                      key);
    }
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, file_parse);
    tcase_add_test(tc, byte_sizes);
    tcase_add_test(tc, listen_forms);
    tcase_add_test(tc, bounds_errors);
    tcase_add_test(tc, file_errors_name_the_line);
    tcase_add_test(tc, unknown_key_lists_known_ones);
    tcase_add_test(tc, long_line_refused);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, cli_overrides_file);
    tcase_add_test(tc, cli_errors);
    tcase_add_test(tc, help_and_version);
    tcase_add_test(tc, check_config_flag);
    tcase_add_test(tc, default_model_from_source_tree);
    tcase_add_test(tc, no_default_model);
    tcase_add_test(tc, model_needs_path);
    tcase_add_test(tc, delay_must_be_below_timeout);
    tcase_add_test(tc, timeout_within_its_maximum);
    tcase_add_test(tc, too_many_models);
    tcase_add_test(tc, blas_budget);
    tcase_add_test(tc, shipped_conf_documents_every_key);
    tcase_add_test(tc, man_page_documents_every_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
