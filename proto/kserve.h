/* kserve.h — the Open Inference Protocol (KServe v2 REST) bodies: infer requests in,
 * tensors out, and the metadata documents, for clients written for Triton or KServe.
 *
 * Use (an HTTP thread, body in memory):
 *   kserve_request kr;  proto_error err;
 *   if (kserve_parse_infer(body, len, header_len, &kr, &err)) respond(err.status, ...);
 *   float *x; int n;
 *   if (kserve_cnn_input(&kr, &preproc, max_images, &x, &n, &err)) ...   // per model kind
 *   ... run x ...
 *   kserve_output outs[2] = {{"logits", KSERVE_FP32, 2, {n, k}, .f32 = logits}, ...};
 *   kserve_format_infer("fashion", &kr, outs, 2, &resp, &resp_len, &json_len, &err);
 *   kserve_request_free(&kr);
 * header_len is the Inference-Header-Content-Length of the binary tensor extension:
 * the first header_len bytes are the JSON, the rest the inputs' binary data in
 * order; without the extension it is len.  A response with binary outputs is the
 * JSON (json_len bytes) followed by their data, little-endian.
 * Errors: 400 for anything malformed (bad JSON, unknown or duplicate input name,
 * unsupported datatype, shape and data that disagree, binary sizes that do not add
 * up, a truncated binary body), 413 for more rows than the server takes, 500 out of
 * memory.  Validation happens here: what parses and converts is safe to queue.
 * Ownership: a parsed request owns its tensors; the *_input functions return
 * malloc'd arrays the caller frees; format functions return malloc'd bodies.
 */
#ifndef MODELD_PROTO_KSERVE_H
#define MODELD_PROTO_KSERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/image.h"
#include "proto/proto.h"

#define KSERVE_MAX_DIMS 8
#define KSERVE_NAME_MAX 64
#define KSERVE_MAX_OUTPUTS 8  /* outputs of one model, at most */

typedef enum kserve_dtype {
    KSERVE_BOOL = 0,
    KSERVE_UINT8,
    KSERVE_INT32,
    KSERVE_INT64,
    KSERVE_FP32,
    KSERVE_BYTES,
} kserve_dtype;

const char *kserve_dtype_name(kserve_dtype t);

typedef struct kserve_tensor {
    char name[KSERVE_NAME_MAX];
    kserve_dtype dtype;
    int ndim;
    int64_t shape[KSERVE_MAX_DIMS];
    size_t count;        /* elements: the product of shape */
    float *f32;          /* FP32 values */
    int64_t *i64;        /* BOOL, UINT8, INT32, INT64 values, widened */
    char **str;          /* BYTES: count strings, each str_len[i] bytes (+ a NUL) */
    size_t *str_len;
} kserve_tensor;

typedef struct kserve_output_req {
    char name[KSERVE_NAME_MAX];
    bool binary;         /* parameters.binary_data */
} kserve_output_req;

typedef struct kserve_request {
    char *id;            /* echoed in the answer; NULL if none */
    kserve_tensor *inputs;
    int n_inputs;
    kserve_output_req *outputs; /* the outputs asked for; n_outputs 0: every one */
    int n_outputs;
    bool binary_default; /* parameters.binary_data_output */
} kserve_request;

int kserve_parse_infer(const char *body, size_t len, size_t header_len, kserve_request *out,
                       proto_error *err);
void kserve_request_free(kserve_request *r);

/* A model's inputs and outputs as the metadata and config documents list them
 * (-1 for a variable dimension). */
typedef struct kserve_io {
    const char *name;
    kserve_dtype dtype;
    int ndim;
    int64_t shape[4];
} kserve_io;

typedef struct kserve_model_io {
    const char *platform;   /* "modeld_cnn", "modeld_bert", "modeld_gan" */
    kserve_io in[3], out[2];
    int n_in, n_out;
} kserve_model_io;

/* From what GET /v1/models/{name} shows of the model. */
void kserve_describe(const proto_model_info *m, kserve_model_io *io);

/* ---- per model kind: the request's tensors as the engine takes them ---------------- */

/* CNN: "input", FP32 (N, C, H, W) already normalised, or UINT8 (N, H, W, C) raw
 * pixels (C 1, 3 or 4), preprocessed as classify's "pixels".  *x (N, C, H, W). */
int kserve_cnn_input(const kserve_request *r, const char *model, const image_preproc *pp,
                     int max_images, float **x, int *n, proto_error *err);

/* BERT: INT64 (or INT32) "input_ids" (N, T) with optional "attention_mask" (1s then
 * 0s per row: the sequence's length) and "token_type_ids"; or BYTES "text" (N)
 * tokenized as fill-mask texts.  Every [MASK] position gets a row of logits. */
typedef struct kserve_bert_batch {
    int n;                  /* sequences */
    engine_bert_seq *seqs;  /* (n), pointing into the arrays below */
    int32_t *ids, *type_ids, *mask_pos;
    int64_t *positions;     /* (n_mask, 2): sequence index, token position */
    int n_mask;             /* all sequences together */
    int tokens;             /* all sequences together */
} kserve_bert_batch;

int kserve_bert_input(const kserve_request *r, const proto_bert_model *bm, int vocab_size,
                      int type_vocab_size, int max_sequences, kserve_bert_batch *out,
                      proto_error *err);
void kserve_bert_batch_free(kserve_bert_batch *b);

/* GAN: FP32 "latent" (N, latent_dim) and, for a conditional model, INT64 (or INT32)
 * "class" (N) of class indices. */
int kserve_gan_input(const kserve_request *r, const proto_gan_model *gm, float **latents,
                     int32_t **classes, int *n, proto_error *err);

/* ---- answers ---------------------------------------------------------------------- */

typedef struct kserve_output {
    const char *name;
    kserve_dtype dtype;     /* FP32 or INT64 */
    int ndim;
    int64_t shape[4];
    const float *f32;
    const int64_t *i64;
} kserve_output;

/* The outputs asked for (all when the request names none; 400 for a name the model
 * does not have) as {"model_name", "model_version", "id"?, "outputs"}; binary ones
 * appended after the JSON.  *body is malloc'd.  JSON has no NaN or infinity: an
 * FP32 output holding one is 500 unless asked for as binary data. */
int kserve_format_infer(const char *model, const kserve_request *r, const kserve_output *outs,
                        int n_outs, char **body, size_t *body_len, size_t *json_len,
                        proto_error *err);

/* 400 unless every output the request names is one of names[0..n): checked before
 * running, so a typo costs no forward pass. */
int kserve_check_outputs(const kserve_request *r, const char *model, const char *const *names,
                         int n, proto_error *err);

/* Will the output `name` be in the answer as JSON "data" (asked for, or every
 * output is, and not as binary data)?  For sizing the answer before running. */
bool kserve_output_in_json(const kserve_request *r, const char *name);

/* GET /v2 */
char *kserve_format_server(const char *version);
/* GET /v2/models/{name} */
char *kserve_format_metadata(const char *name, const kserve_model_io *io);
/* GET /v2/models/{name}/config: Triton's model configuration fields that load
 * generators read (max_batch_size, dynamic_batching). */
char *kserve_format_config(const char *name, const kserve_model_io *io, int max_batch,
                           long long max_queue_delay_us);
/* GET /v2/models/{name}/ready */
char *kserve_format_ready(const char *name, bool ready);

#endif
