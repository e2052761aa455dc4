/* proto.h — everything JSON of the HTTP API: requests in, responses out.
 *
 * Use (an HTTP thread, after the body is in memory):
 *   proto_classify_req req;  proto_error err;
 *   if (proto_parse_classify(body, len, &md.preproc, md.n_labels, max_images, &req, &err))
 *       respond(err.status, proto_format_error(err.msg));
 *   ... run req.inputs (req.n, C, H, W) through the model -> probs (req.n, K) ...
 *   char *json = proto_format_classify("fashion", req.form, probs, req.n, K, req.top_k,
 *                                      md.labels, &err);
 *   proto_classify_req_free(&req);  free(json);
 * Ownership: every char * returned is malloc'd and the caller's to free(); a parsed
 * request owns its inputs until the caller takes them (sets req.inputs = NULL).
 *
 * Validation lives here and only here: a request that parses is safe to queue.
 * Status codes: 400 malformed JSON, wrong type, unknown field, bad top_k;
 * 413 too many images; 415 not base64 or not a decodable image;
 * 422 image or pixels of a shape or value the model cannot take; 500 out of memory.
 * Nothing here knows HTTP transport, threads or the engine's internals.
 */
#ifndef MODELD_PROTO_PROTO_H
#define MODELD_PROTO_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"

#define PROTO_DEFAULT_TOP_K 5
/* A pixels array is refused beyond this many values per side (as decoded images). */
#define PROTO_MAX_PIXELS_SIDE 4096

typedef struct proto_error {
    int status;     /* HTTP status */
    char msg[512];  /* what is wrong and how to fix it */
} proto_error;

/* Which field carried the input; decides the response's shape. */
typedef enum proto_form {
    PROTO_FORM_IMAGE = 0, /* {"image": b64}  -> {"model", "predictions"} */
    PROTO_FORM_IMAGES,    /* {"images": [..]} -> {"model", "results": [{"predictions"}]} */
    PROTO_FORM_PIXELS,    /* {"pixels": [[..]]} -> as "image" */
} proto_form;

typedef struct proto_classify_req {
    proto_form form;
    int n;          /* images */
    float *inputs;  /* (n, C, H, W) normalised per the model's preproc; owned */
    int top_k;      /* 1..n_labels */
} proto_classify_req;

/* Parses and validates a classify body; on success fills out and returns 0, else
 * returns the HTTP status, also in err->status, with err->msg. */
int proto_parse_classify(const char *body, size_t len, const image_preproc *pp, int n_labels,
                         int max_images, proto_classify_req *out, proto_error *err);
void proto_classify_req_free(proto_classify_req *req);

/* probs (n, k_classes) softmax rows -> the classify response, predictions sorted by
 * score descending (ties by index).  NULL with err (500) on failure. */
char *proto_format_classify(const char *model, proto_form form, const float *probs, int n,
                            int k_classes, int top_k, char *const *labels, proto_error *err);

/* One entry of GET /v1/models. */
typedef struct proto_model_info {
    const char *name;
    const char *kind;         /* "cnn" */
    bool ready;
    const char *architecture; /* "layers", "resnet18", ... */
    int channels, height, width;
    int classes;
    int max_batch_size;
} proto_model_info;

char *proto_format_models(const proto_model_info *models, int n);
char *proto_format_model(const proto_model_info *model);
/* {"status": status} */
char *proto_format_status(const char *status);
/* {"error": msg}; msg that is not valid UTF-8 has its non-ASCII bytes replaced by '?'. */
char *proto_format_error(const char *msg);

/* Strict RFC 4648 section 4 base64: standard alphabet, '=' padding required, no
 * whitespace, zero pad bits.  out needs proto_base64_max(len) bytes.  Returns
 * false with a reason in why (why may be NULL). */
size_t proto_base64_max(size_t len);
bool proto_base64_decode(const char *in, size_t len, uint8_t *out, size_t *out_len, char *why,
                         size_t why_len);

#endif
