/* proto.h — everything JSON of the HTTP API: requests in, responses out.
 *
 * Classify (CNN models).  Use (an HTTP thread, after the body is in memory):
 *   proto_classify_req req;  proto_error err;
 *   if (proto_parse_classify(body, len, &md.preproc, md.n_labels, max_images, &req, &err))
 *       respond(err.status, proto_format_error(err.msg));
 *   ... run req.inputs (req.n, C, H, W) through the model -> probs (req.n, K) ...
 *   char *json = proto_format_classify("fashion", req.form, probs, req.n, K, req.top_k,
 *                                      md.labels, &err);
 *   proto_classify_req_free(&req);  free(json);
 * Fill-mask and next-sentence (BERT models): the text is tokenized here, with the
 * model's read-only WordPiece table, so what is queued is token ids:
 *   proto_bert_model bm = {"bert", wp, 512, wordpiece_vocab_size(wp)};
 *   proto_fill_mask_req fm;
 *   if (proto_parse_fill_mask(body, len, &bm, &fm, &err)) respond(err.status, ...);
 *   ... run fm.ids (fm.len) -> top ids and scores (fm.n_mask, fm.top_k) ...
 *   char *json = proto_format_fill_mask(&bm, &fm, top_ids, top_scores, &err);
 *   proto_fill_mask_req_free(&fm);
 * Ownership: every char * returned is malloc'd and the caller's to free(); a parsed
 * request owns its arrays until the caller takes them (sets the pointer to NULL)
 * or frees the request.
 *
 * Validation lives here and only here: a request that parses is safe to queue.
 * Status codes: 400 malformed JSON (including text that is not UTF-8), wrong type,
 * unknown field, bad top_k; 413 too many images, a text longer than the model takes
 * (tokens) or than WORDPIECE_MAX_TEXT_BYTES, too many targets; 415 not base64 or not
 * a decodable image; 422 image or pixels of a shape or value the model cannot take,
 * no [MASK] in a fill-mask text, a target with no token, too many answers asked;
 * 500 out of memory.
 * Nothing here knows HTTP transport, threads or the engine's internals.
 */
#ifndef MODELD_PROTO_PROTO_H
#define MODELD_PROTO_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/image.h"
#include "engine/wordpiece.h"

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

/* ---- BERT: fill-mask and next-sentence -------------------------------------- */

#define PROTO_FILL_MASK_MAX_TOP_K 100
#define PROTO_FILL_MASK_MAX_TARGETS 1000
/* A target is one word: longer strings are refused. */
#define PROTO_FILL_MASK_MAX_TARGET_BYTES 256
/* masks x top_k answers in one response at most: each carries a decoded sequence. */
#define PROTO_FILL_MASK_MAX_ANSWERS 2048

/* What parsing needs to know of a BERT model. */
typedef struct proto_bert_model {
    const char *name;      /* for messages */
    const wordpiece *wp;   /* its tokenizer: [CLS], [SEP] and [MASK] must exist */
    int max_tokens;        /* max_position_embeddings, [CLS] and [SEP] included */
    int candidates;        /* ids that may be predicted: 0..candidates-1 */
} proto_bert_model;

/* Which field carried the text: the same answer either way. */
typedef enum proto_bert_form {
    PROTO_BERT_TEXT = 0,  /* {"text": ..., "top_k": ..., "targets": ...} */
    PROTO_BERT_INPUTS,    /* {"inputs": ..., "parameters": {"top_k", "targets"}} (Hugging Face) */
} proto_bert_form;

typedef struct proto_fill_mask_req {
    proto_bert_form form;
    int32_t *ids;       /* (T) [CLS] text [SEP]; owned */
    int len;            /* T, at most max_tokens */
    int32_t *mask_pos;  /* (M) positions of [MASK] in ids, ascending; owned */
    int n_mask;         /* M >= 1 */
    int top_k;          /* answers per mask: 1..candidates (or n_targets) */
    int32_t *targets;   /* (n_targets) distinct ids to rank, or NULL: all; owned */
    int n_targets;
} proto_fill_mask_req;

int proto_parse_fill_mask(const char *body, size_t len, const proto_bert_model *bm,
                          proto_fill_mask_req *out, proto_error *err);
void proto_fill_mask_req_free(proto_fill_mask_req *req);

/* top_ids, top_scores: (n_mask, top_k) answers per mask, best first ->
 * {"model", "masks": [[{"score","token","token_str","sequence"}, ...], ...]}.
 * "sequence" is the text with that mask filled: with one mask, decoded without any
 * special token (as Hugging Face's fill-mask pipeline); with several, decoded with
 * the other [MASK]s in place and only the [CLS], final [SEP] and any [PAD] left out. */
char *proto_format_fill_mask(const proto_bert_model *bm, const proto_fill_mask_req *req,
                             const int32_t *top_ids, const float *top_scores, proto_error *err);

typedef struct proto_next_sentence_req {
    int32_t *ids;       /* (T) [CLS] a [SEP] b [SEP]; owned */
    int32_t *type_ids;  /* (T) 0 up to the first [SEP], 1 after; owned */
    int len;            /* T, at most max_tokens */
} proto_next_sentence_req;

int proto_parse_next_sentence(const char *body, size_t len, const proto_bert_model *bm,
                              proto_next_sentence_req *out, proto_error *err);
void proto_next_sentence_req_free(proto_next_sentence_req *req);
/* {"model", "is_next": p, "not_next": 1 - p} */
char *proto_format_next_sentence(const char *model, float is_next, proto_error *err);

/* ---- GAN: generate ------------------------------------------------------------ */

/* Images in one generate request at most, unless the server configures otherwise. */
#define PROTO_GENERATE_DEFAULT_MAX 64

/* What parsing and answering need to know of a generator. */
typedef struct proto_gan_model {
    const char *name;
    int latent_dim;
    int num_classes;            /* 0: unconditional */
    char *const *labels;        /* num_classes labels, or NULL */
    int channels, height, width;
    image_range range;          /* how the network's values map to pixels */
    int max_count;              /* images per request */
} proto_gan_model;

typedef struct proto_generate_req {
    int n;                 /* images, 1..max_count */
    float *latents;        /* (n, latent_dim); owned */
    int32_t *classes;      /* (n) class of each image, or NULL (unconditional); owned */
    uint64_t *seeds;       /* (n) seed of each image, or NULL (latents given); owned */
    float *t;              /* (n) position on an interpolation, or NULL; owned */
    bool grid;             /* one PNG tiling all images */
} proto_generate_req;

/* Parses {"count", "seed", "class", "latent", "interpolate", "grid"} (docs/API.md).
 * random_seed stands in for an omitted seed (the caller draws it from the OS).
 * 400 malformed or unknown field or a seed that is not an unsigned 64-bit integer;
 * 413 more images than max_count; 422 count below 1, latent of the wrong length,
 * unknown class, a class for an unconditional model, bad interpolation steps. */
int proto_parse_generate(const char *body, size_t len, const proto_gan_model *gm,
                         uint64_t random_seed, proto_generate_req *out, proto_error *err);
void proto_generate_req_free(proto_generate_req *req);

/* images (n, C, H, W), the generator's raw output -> {"model", "images": [{"seed" |
 * "t" | "index", "class"?, "png": base64}, ...]}, or with grid {"model", "grid":
 * base64, "images": [... without "png"]}.  NULL with err (500) on failure. */
char *proto_format_generate(const proto_gan_model *gm, const proto_generate_req *req,
                            const float *images, proto_error *err);
/* The same as one PNG (Accept: image/png): the single image or the grid; 422 when the
 * request made several images without grid.  *png is malloc'd. */
int proto_generate_png(const proto_gan_model *gm, const proto_generate_req *req,
                       const float *images, uint8_t **png, size_t *png_len, proto_error *err);

/* ---- models ------------------------------------------------------------------- */

/* One entry of GET /v1/models. */
typedef struct proto_model_info {
    const char *name;
    const char *kind;         /* "cnn", "bert" or "gan": decides which fields follow */
    bool ready;
    /* kind "cnn" */
    const char *architecture; /* "layers", "resnet18", ... */
    int channels, height, width;
    int classes;
    int max_batch_size;       /* both kinds: images or sequences per forward pass */
    /* kind "bert" */
    int max_tokens;           /* longest sequence, [CLS] and [SEP] included */
    int vocab_size;
    bool next_sentence;       /* has the next-sentence head (false until loaded) */
    int max_batch_tokens;     /* tokens per forward pass */
    /* kind "gan": architecture, channels/height/width (the image made) and classes
     * (0: unconditional) as above, and */
    int latent_dim;
    int max_count;            /* images per generate request */
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
/* in -> a NUL-terminated base64 string (padded), malloc'd; NULL when out of memory. */
char *proto_base64_encode(const uint8_t *in, size_t len);

#endif
