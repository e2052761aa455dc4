/* engine.h — the public API of libengine, modeld's inference engine.
 *
 * Use:
 *   engine_model *m;  engine_err err;
 *   if (engine_cnn_load(&spec, "dir/model.safetensors", 16, &m, &err) != ENGINE_OK)
 *       fprintf(stderr, "%s\n", err.msg);
 *   engine_session *s;  engine_session_open(m, &s, &err);      // one per worker thread
 *   engine_cnn_forward(s, x, n, logits, &err);                 // x (N,C,H,W) -> logits (N,K)
 *   engine_session_close(s);  engine_model_free(m);
 * BERT and GAN generators are the same with engine_bert_load()/engine_bert_forward()
 * and engine_gan_load()/engine_gan_forward() (below); a model answers only the
 * forward of its own kind (ENGINE_ERR_INVALID otherwise).
 *
 * Ownership: the caller owns everything it passes in and everything engine_*_open/
 * load hands out, and frees the latter with the matching _free/_close.  A model is
 * immutable after load and may be shared by any number of threads; a session is
 * owned by one thread at a time.  The engine keeps no global mutable state; the one
 * process-wide setting (BLAS threads) is taken by engine_set_blas_threads().
 *
 * Errors: every fallible call returns an engine_status and, when err is non-NULL,
 * a human-readable message naming what was wrong (a tensor, a shape, a file).
 * Nothing here prints or exits.
 */
#ifndef MODELD_ENGINE_H
#define MODELD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum engine_status {
    ENGINE_OK = 0,
    ENGINE_ERR_NOMEM,       /* allocation failed */
    ENGINE_ERR_IO,          /* file missing or unreadable */
    ENGINE_ERR_FORMAT,      /* checkpoint or config malformed */
    ENGINE_ERR_SHAPE,       /* tensor missing or of the wrong shape */
    ENGINE_ERR_UNSUPPORTED, /* valid input this engine does not implement */
    ENGINE_ERR_INVALID,     /* caller passed an invalid argument (batch too large, ...) */
    ENGINE_ERR_IMAGE,       /* image bytes could not be decoded */
} engine_status;

typedef struct engine_err {
    char msg[512];
} engine_err;

const char *engine_status_str(engine_status s);

/* Formats a message into err (when non-NULL) and returns s, so callers write
 * `return engine_fail(err, ENGINE_ERR_SHAPE, "tensor '%s' ...", name);`. */
engine_status engine_fail(engine_err *err, engine_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The process-wide BLAS thread count.  Called once at start-up by the one place
 * that owns the thread budget (the daemon's worker setup, a benchmark's main). */
void engine_set_blas_threads(int n);
int engine_blas_threads(void);

/* ---- models ------------------------------------------------------------ */

struct cnn_spec;                          /* engine/models/cnn.h */
typedef struct engine_model engine_model;
typedef struct engine_session engine_session;

/* Builds a CNN from its spec and a safetensors checkpoint.  max_batch bounds the
 * batch size a session of this model can run; per-session arenas are sized for it. */
engine_status engine_cnn_load(const struct cnn_spec *spec, const char *weights_path,
                              int max_batch, engine_model **out, engine_err *err);
void engine_model_free(engine_model *m);

/* Input geometry: x is (N, channels, height, width), already normalised; (0, 0, 0)
 * for BERT; (latent_dim, 1, 1) for a GAN.  num_outputs: classes (CNN), vocabulary size
 * (BERT) or C*H*W of one image (GAN); max_batch: images or sequences. */
void engine_model_input_shape(const engine_model *m, int *channels, int *height, int *width);
int engine_model_num_outputs(const engine_model *m);
int engine_model_max_batch(const engine_model *m);
/* Multiply-adds x 2 of one sample's forward pass (CNN, GAN: convolutions,
 * transposed convolutions and linears per image; BERT: the encoder's GEMMs per
 * token), for reporting GFLOP/s. */
double engine_model_flops(const engine_model *m);
/* Bytes of per-session scratch (the arena) and of weights held outside the mmap. */
size_t engine_model_arena_bytes(const engine_model *m);

engine_status engine_session_open(const engine_model *m, engine_session **out, engine_err *err);
void engine_session_close(engine_session *s);

/* x: (N,C,H,W) float32, n <= max_batch; logits: (N, num_outputs).  Never allocates. */
engine_status engine_cnn_forward(engine_session *s, const float *x, int n, float *logits,
                                 engine_err *err);

/* ---- GAN generators ------------------------------------------------------------ */

struct gan_spec; /* engine/models/gan.h */

/* Builds a generator from its spec and checkpoint (a conditional one's embedding read
 * from it too).  Fails, naming both shapes, when the network's output is not the
 * spec's (out_channels, out_height, out_width).  Sessions are sized for max_batch
 * images. */
engine_status engine_gan_load(const struct gan_spec *spec, const char *weights_path,
                              int max_batch, engine_model **out, engine_err *err);
/* z's width per sample, and the class count (0: unconditional; then no classes). */
int engine_gan_latent_dim(const engine_model *m);
int engine_gan_num_classes(const engine_model *m);
/* The image one sample makes, (C, H, W); (0, 0, 0) for another kind of model. */
void engine_gan_output_shape(const engine_model *m, int *channels, int *height, int *width);

/* z: (N, latent_dim) latents; classes: (N) class ids in 0..num_classes-1 for a
 * conditional generator, NULL for an unconditional one (anything else is
 * ENGINE_ERR_INVALID, checked before any work); images: (N, C, H, W), the
 * generator's raw output (tanh range [-1, 1] or sigmoid [0, 1] as the model directory
 * says: no mapping to pixels here).  n <= max_batch.  Never allocates. */
engine_status engine_gan_forward(engine_session *s, const float *z, const int32_t *classes,
                                 int n, float *images, engine_err *err);

/* ---- BERT ------------------------------------------------------------------ */

struct bert_config; /* engine/models/bert.h */

/* Builds a BERT from a Hugging Face checkpoint (BertForMaskedLM or BertForPreTraining
 * key names; the MLM decoder tied to the word embeddings when absent).  Sessions are
 * sized for batches of up to max_batch sequences of up to max_tokens tokens in all. */
engine_status engine_bert_load(const struct bert_config *cfg, const char *weights_path,
                               int max_batch, int max_tokens, engine_model **out,
                               engine_err *err);
/* Whether the checkpoint has the next-sentence head (cls.seq_relationship). */
bool engine_bert_has_nsp(const engine_model *m);

/* One sequence of a batch: token ids with [CLS] ... [SEP] already in place. */
typedef struct engine_bert_seq {
    const int32_t *ids;        /* (T) */
    const int32_t *type_ids;   /* (T) segment ids, or NULL for all zeros */
    int len;                   /* T, 1..max_position_embeddings */
    const int32_t *mask_pos;   /* positions whose MLM logits are wanted */
    int n_mask;
} engine_bert_seq;

/* Runs n sequences as one batch (packed: no padding is computed) and writes, when
 * non-NULL, mlm: (sum of n_mask, vocab_size) logits at the mask positions in order,
 * and nsp: (n, 2) next-sentence logits (index 0 = "B follows A").  Every sequence gets
 * the answer it would get alone.  Never allocates. */
engine_status engine_bert_forward(engine_session *s, const engine_bert_seq *seqs, int n,
                                  float *mlm, float *nsp, engine_err *err);

/* Row-wise softmax of (rows, cols) logits in place: the scores the API returns. */
void engine_softmax(float *x, int rows, int cols);

#endif
