/* bert.c — BERT from a Hugging Face checkpoint (BertForMaskedLM / BertForPreTraining
 * key names), and its forward pass over a packed batch.
 *
 * Load (one thread, may allocate): every tensor is looked up by its HF name with its
 * exact shape.  The weight matrices every token goes through (query/key/value fused
 * into one (3D, D) matrix so a layer starts with a single GEMM, the attention output,
 * both FFN matrices, the MLM transform and the pooler) are rearranged into the packed
 * layout of linear_forward_packed, in memory the model owns, and their pages of the
 * mapping are dropped; the rest (embeddings, biases, LayerNorms, the decoder) is used
 * in place from the mapping when it is aligned F32, else converted into owned memory.
 * The MLM decoder is the word-embedding matrix unless the checkpoint stores its own.
 * The NSP head (pooler + seq_relationship) is optional.  Keys without the "bert."
 * prefix (a bare BertModel encoder under cls.* heads) are accepted too.
 *
 * Forward (any thread, its own arena, never allocates): the sequences are packed
 * back to back, (Ttot, D), with no padding; every GEMM runs over the whole packed
 * batch, and only attention is per sequence (and per head, on column blocks of the
 * packed QKV).  The last layer computes only the rows the heads read (mask positions
 * and [CLS]): attention needs every row's keys and values, but its queries, the
 * output projection and the FFN run on the selected rows alone, which saves most of
 * a layer.  Where the time goes (perf, BERT-base, one sequence of 128 tokens, 2
 * threads): ~80% in the packed GEMM kernel, which runs at ~85% of the FMA peak
 * measured on these cores; ~4% attention's per-head products; ~2% the MLM decoder
 * (V x D read for each mask: memory-bound); ~2% GELU; the rest LayerNorm, softmax
 * and the threads' hand-offs.  Before the weights were packed at load, OpenBLAS
 * copied every weight matrix into its own layout on every call (~11% of the time)
 * and its threads yield-spun between calls (~15%).
 *
 * Errors are returned through engine_fail, never printed.  Request values (ids,
 * lengths, mask positions) are all checked before anything runs, so nothing past the
 * checks can index out of bounds.
 */
#include "engine/models/builders.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"
#include "engine/parallel.h"

/* Bounds that keep every size product far from int and size_t overflow; real BERTs
 * sit orders of magnitude below them. */
#define BERT_MAX_VOCAB (1 << 24)
#define BERT_MAX_HIDDEN (1 << 16)
#define BERT_MAX_LAYERS 1024
#define BERT_MAX_INTER (1 << 20)
#define BERT_MAX_POSITIONS (1 << 20)
#define BERT_MAX_TYPES (1 << 20)
#define BERT_MAX_BATCH 65536
#define BERT_MAX_TOKENS (1 << 24)

/* Weight matrices applied to every token are held packed (linear_pack, owned), the
 * rest as they lie in the checkpoint. */
typedef struct bert_layer {
    float *qkv_w;                    /* packed (3D, D): query; key; value rows */
    float *qkv_b;                    /* (3D) owned */
    const float *attn_out_w;         /* packed (D, D) attention.output.dense */
    const float *attn_out_b;         /* (D) */
    const float *ln1_g, *ln1_b;      /* (D) attention.output.LayerNorm */
    const float *ffn_in_w;           /* packed (I, D) intermediate.dense */
    const float *ffn_in_b;           /* (I) */
    const float *ffn_out_w;          /* packed (D, I) output.dense */
    const float *ffn_out_b;          /* (D) */
    const float *ln2_g, *ln2_b;      /* (D) output.LayerNorm */
} bert_layer;

struct bert_model {
    bert_config cfg;
    int d, heads, dh, inter, vocab;  /* D, A, D/A, I, V */
    act_kind act;                    /* FFN and MLM transform: GELU or ReLU */
    int max_batch, max_tokens;
    int max_rows;                    /* max_tokens + max_batch: mask rows + [CLS] rows */
    int max_len;                     /* longest sequence a session can see */
    int threads;                     /* session pool size the arena is planned for */
    const float *word;               /* (V, D) */
    const float *pos;                /* (P, D) */
    const float *type;               /* (TV, D) */
    const float *emb_ln_g, *emb_ln_b; /* (D) */
    bert_layer *layers;              /* (L) */
    const float *head_w, *head_b;    /* packed (D, D), (D) cls.predictions.transform.dense */
    const float *head_ln_g, *head_ln_b; /* (D) cls.predictions.transform.LayerNorm */
    const float *decoder;            /* (V, D) its own, or the word embeddings */
    const float *decoder_b;          /* (V) cls.predictions.bias */
    const float *pool_w, *pool_b;    /* packed (D, D), (D) bert.pooler.dense; NULL: no NSP */
    const float *nsp_w, *nsp_b;      /* (2, D), (2) cls.seq_relationship */
    float **owned;                   /* converted or fused weights */
    int n_owned, cap_owned;
};

/* ---- loading ------------------------------------------------------------------- */

typedef struct loader {
    bert_model *b;
    const safetensors *st;
    const char *prefix;              /* "bert." or "" for the encoder's keys */
    engine_status status;            /* the first error sticks */
    engine_err *err;
} loader;

static void loader_fail(loader *ld, engine_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void loader_fail(loader *ld, engine_status s, const char *fmt, ...)
{
    if (ld->status != ENGINE_OK)
        return;
    ld->status = s;
    if (ld->err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err->msg, sizeof ld->err->msg, fmt, ap);
        va_end(ap);
    }
}

static float *own_floats(loader *ld, size_t n)
{
    bert_model *b = ld->b;
    if (ld->status != ENGINE_OK)
        return NULL;
    if (b->n_owned == b->cap_owned) {
        int cap = b->cap_owned ? 2 * b->cap_owned : 64;
        float **p = realloc(b->owned, (size_t)cap * sizeof *p);
        if (!p) {
            loader_fail(ld, ENGINE_ERR_NOMEM, "out of memory for weights");
            return NULL;
        }
        b->owned = p;
        b->cap_owned = cap;
    }
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) & ~(size_t)63);
    if (!p) {
        loader_fail(ld, ENGINE_ERR_NOMEM, "out of memory for weights (%zu floats)", n);
        return NULL;
    }
    b->owned[b->n_owned++] = p;
    return p;
}

/* The tensor called name with exactly shape (d0) or (d0, d1) (d1 < 0: one dim);
 * NULL when absent (an error unless optional) or of another shape (an error). */
static const safetensors_tensor *find(loader *ld, const char *name, int64_t d0, int64_t d1,
                                      bool optional)
{
    if (ld->status != ENGINE_OK)
        return NULL;
    const int64_t dims[2] = {d0, d1};
    const safetensors_tensor *t;
    engine_err e;
    if (safetensors_find_shaped(ld->st, name, dims, d1 < 0 ? 1 : 2, optional, &t, &e) !=
        ENGINE_OK)
        loader_fail(ld, ENGINE_ERR_SHAPE, "%s", e.msg);
    return t;
}

/* A usable float pointer to the tensor: into the mapping when it is aligned F32,
 * else a converted copy the model owns. */
static const float *get(loader *ld, const char *name, int64_t d0, int64_t d1, bool optional)
{
    const safetensors_tensor *t = find(ld, name, d0, d1, optional);
    if (!t)
        return NULL;
    const float *direct = safetensors_f32_data(t);
    if (direct)
        return direct;
    float *copy = own_floats(ld, (size_t)t->numel);
    engine_err e;
    if (copy && safetensors_read_f32(t, copy, &e) != ENGINE_OK) {
        loader_fail(ld, ENGINE_ERR_FORMAT, "%s", e.msg);
        return NULL;
    }
    return copy;
}

/* The (out, in) matrix `src` packed into memory the model owns. */
static float *pack(loader *ld, int64_t out, int64_t in, const float *src)
{
    float *panels = own_floats(ld, linear_packed_floats((int)out, (int)in));
    if (panels && src)
        linear_pack((int)out, (int)in, src, panels);
    return panels;
}

/* The weight matrix called name, (out, in), packed; its checkpoint bytes are read
 * once here and never again. */
static const float *get_packed(loader *ld, const char *name, int64_t out, int64_t in,
                               bool optional)
{
    const safetensors_tensor *t = find(ld, name, out, in, optional);
    if (!t)
        return NULL;
    const float *src = safetensors_f32_data(t);
    float *converted = NULL;
    if (!src) {
        converted = malloc((size_t)t->numel * sizeof(float));
        engine_err e;
        if (!converted)
            loader_fail(ld, ENGINE_ERR_NOMEM, "out of memory for weights (%s)", name);
        else if (safetensors_read_f32(t, converted, &e) != ENGINE_OK)
            loader_fail(ld, ENGINE_ERR_FORMAT, "%s", e.msg);
        src = converted;
    }
    const float *panels = ld->status == ENGINE_OK ? pack(ld, out, in, src) : NULL;
    free(converted);
    if (panels)
        safetensors_drop(ld->st, t);
    return panels;
}

/* Reads the tensor, converted to float, into dst (d0 * max(d1, 1) floats); its
 * checkpoint bytes are not read again. */
static void read_into(loader *ld, const char *name, int64_t d0, int64_t d1, float *dst)
{
    const safetensors_tensor *t = dst ? find(ld, name, d0, d1, false) : NULL;
    engine_err e;
    if (t && safetensors_read_f32(t, dst, &e) != ENGINE_OK)
        loader_fail(ld, ENGINE_ERR_FORMAT, "%s", e.msg);
    else if (t)
        safetensors_drop(ld->st, t);
}

static void load_layer(loader *ld, int l, bert_layer *w)
{
    const bert_model *b = ld->b;
    const int64_t D = b->d, I = b->inter;
    char at[64], name[160];
#define KEY(suffix) (snprintf(name, sizeof name, "%s%s", at, suffix), name)
    snprintf(at, sizeof at, "%sencoder.layer.%d.", ld->prefix, l);

    /* query, key and value stacked into one (3D, D) matrix before packing */
    float *fused = malloc((size_t)(3 * D * D) * sizeof(float));
    if (!fused)
        loader_fail(ld, ENGINE_ERR_NOMEM, "out of memory for weights");
    w->qkv_b = own_floats(ld, (size_t)(3 * D));
    static const char *const qkv[3] = {"query", "key", "value"};
    for (int i = 0; i < 3; i++) {
        char suffix[64];
        snprintf(suffix, sizeof suffix, "attention.self.%s.weight", qkv[i]);
        read_into(ld, KEY(suffix), D, D, fused ? fused + (size_t)i * D * D : NULL);
        snprintf(suffix, sizeof suffix, "attention.self.%s.bias", qkv[i]);
        read_into(ld, KEY(suffix), D, -1, w->qkv_b ? w->qkv_b + (size_t)i * D : NULL);
    }
    w->qkv_w = ld->status == ENGINE_OK ? pack(ld, 3 * D, D, fused) : NULL;
    free(fused);
    w->attn_out_w = get_packed(ld, KEY("attention.output.dense.weight"), D, D, false);
    w->attn_out_b = get(ld, KEY("attention.output.dense.bias"), D, -1, false);
    w->ln1_g = get(ld, KEY("attention.output.LayerNorm.weight"), D, -1, false);
    w->ln1_b = get(ld, KEY("attention.output.LayerNorm.bias"), D, -1, false);
    w->ffn_in_w = get_packed(ld, KEY("intermediate.dense.weight"), I, D, false);
    w->ffn_in_b = get(ld, KEY("intermediate.dense.bias"), I, -1, false);
    w->ffn_out_w = get_packed(ld, KEY("output.dense.weight"), D, I, false);
    w->ffn_out_b = get(ld, KEY("output.dense.bias"), D, -1, false);
    w->ln2_g = get(ld, KEY("output.LayerNorm.weight"), D, -1, false);
    w->ln2_b = get(ld, KEY("output.LayerNorm.bias"), D, -1, false);
#undef KEY
}

static void load_weights(loader *ld)
{
    bert_model *b = ld->b;
    const bert_config *c = &b->cfg;
    const int64_t D = b->d, V = b->vocab;
    char name[160];
#define ENC(suffix) (snprintf(name, sizeof name, "%s%s", ld->prefix, suffix), name)
    b->word = get(ld, ENC("embeddings.word_embeddings.weight"), V, D, false);
    b->pos = get(ld, ENC("embeddings.position_embeddings.weight"), c->max_position_embeddings,
                 D, false);
    b->type = get(ld, ENC("embeddings.token_type_embeddings.weight"), c->type_vocab_size, D,
                  false);
    b->emb_ln_g = get(ld, ENC("embeddings.LayerNorm.weight"), D, -1, false);
    b->emb_ln_b = get(ld, ENC("embeddings.LayerNorm.bias"), D, -1, false);
    for (int l = 0; l < c->num_hidden_layers && ld->status == ENGINE_OK; l++)
        load_layer(ld, l, &b->layers[l]);

    b->head_w = get_packed(ld, "cls.predictions.transform.dense.weight", D, D, false);
    b->head_b = get(ld, "cls.predictions.transform.dense.bias", D, -1, false);
    b->head_ln_g = get(ld, "cls.predictions.transform.LayerNorm.weight", D, -1, false);
    b->head_ln_b = get(ld, "cls.predictions.transform.LayerNorm.bias", D, -1, false);
    /* Tied to the word embeddings unless stored (save_pretrained drops the alias; a
     * model saved with tie_word_embeddings false keeps its own). */
    b->decoder = get(ld, "cls.predictions.decoder.weight", V, D, true);
    if (!b->decoder)
        b->decoder = b->word;
    /* cls.predictions.decoder.bias is an alias of cls.predictions.bias in HF; accept
     * a checkpoint that kept only the alias. */
    b->decoder_b = get(ld, "cls.predictions.bias", V, -1, true);
    if (!b->decoder_b)
        b->decoder_b = get(ld, "cls.predictions.decoder.bias", V, -1, true);
    if (!b->decoder_b)
        get(ld, "cls.predictions.bias", V, -1, false); /* the error names the usual key */

    if (ld->status == ENGINE_OK && safetensors_find(ld->st, "cls.seq_relationship.weight")) {
        b->nsp_w = get(ld, "cls.seq_relationship.weight", 2, D, false);
        b->nsp_b = get(ld, "cls.seq_relationship.bias", 2, -1, false);
        b->pool_w = get_packed(ld, ENC("pooler.dense.weight"), D, D, false);
        b->pool_b = get(ld, ENC("pooler.dense.bias"), D, -1, false);
    }
#undef ENC
}

static engine_status check_config(const bert_config *c, int max_batch, int max_tokens,
                                  engine_err *err)
{
    struct { const char *name; int v, hi; } f[] = {
        {"vocab_size", c->vocab_size, BERT_MAX_VOCAB},
        {"hidden_size", c->hidden_size, BERT_MAX_HIDDEN},
        {"num_hidden_layers", c->num_hidden_layers, BERT_MAX_LAYERS},
        {"num_attention_heads", c->num_attention_heads, BERT_MAX_HIDDEN},
        {"intermediate_size", c->intermediate_size, BERT_MAX_INTER},
        {"max_position_embeddings", c->max_position_embeddings, BERT_MAX_POSITIONS},
        {"type_vocab_size", c->type_vocab_size, BERT_MAX_TYPES},
        {"max_batch", max_batch, BERT_MAX_BATCH},
        {"max_tokens", max_tokens, BERT_MAX_TOKENS},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v < 1 || f[i].v > f[i].hi)
            return engine_fail(err, ENGINE_ERR_INVALID, "BERT %s %d is outside 1..%d",
                               f[i].name, f[i].v, f[i].hi);
    if (c->hidden_size % c->num_attention_heads)
        return engine_fail(err, ENGINE_ERR_INVALID, "BERT hidden_size %d is not a multiple "
                           "of num_attention_heads %d", c->hidden_size,
                           c->num_attention_heads);
    if (!(c->layer_norm_eps > 0.0f) || !isfinite(c->layer_norm_eps))
        return engine_fail(err, ENGINE_ERR_INVALID, "BERT layer_norm_eps must be a positive "
                           "finite number");
    return ENGINE_OK;
}

engine_status bert_load(const bert_config *cfg, const safetensors *st, int max_batch,
                        int max_tokens, bert_model **out, engine_err *err)
{
    *out = NULL;
    engine_status s = check_config(cfg, max_batch, max_tokens, err);
    if (s != ENGINE_OK)
        return s;
    bert_model *b = calloc(1, sizeof *b);
    if (b)
        b->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *b->layers);
    if (!b || !b->layers) {
        free(b);
        return engine_fail(err, ENGINE_ERR_NOMEM, "out of memory");
    }
    b->cfg = *cfg;
    b->d = cfg->hidden_size;
    b->heads = cfg->num_attention_heads;
    b->dh = b->d / b->heads;
    b->inter = cfg->intermediate_size;
    b->vocab = cfg->vocab_size;
    b->act = cfg->hidden_act_relu ? ACT_RELU : ACT_GELU;
    b->max_batch = max_batch;
    b->max_tokens = max_tokens;
    b->max_rows = max_tokens + max_batch;
    b->max_len = max_tokens < cfg->max_position_embeddings ? max_tokens
                                                           : cfg->max_position_embeddings;
    /* sessions' pools have as many threads as BLAS (engine/parallel.h), set once at
     * start-up before any model loads */
    b->threads = engine_blas_threads() > 0 ? engine_blas_threads() : 1;

    /* HF's BertModel saves its keys without the "bert." of the task models. */
    const bool bare = !safetensors_find(st, "bert.embeddings.word_embeddings.weight") &&
                      safetensors_find(st, "embeddings.word_embeddings.weight");
    loader ld = {.b = b, .st = st, .prefix = bare ? "" : "bert.", .status = ENGINE_OK,
                 .err = err};
    load_weights(&ld);
    if (ld.status != ENGINE_OK) {
        bert_free(b);
        return ld.status;
    }
    *out = b;
    return ENGINE_OK;
}

void bert_free(bert_model *b)
{
    if (!b)
        return;
    for (int i = 0; i < b->n_owned; i++)
        free(b->owned[i]);
    free(b->owned);
    free(b->layers);
    free(b);
}

bool bert_has_nsp(const bert_model *b)
{
    return b->nsp_w != NULL;
}

int bert_vocab_size(const bert_model *b)
{
    return b->vocab;
}

int bert_max_batch(const bert_model *b)
{
    return b->max_batch;
}

int bert_max_tokens(const bert_model *b)
{
    return b->max_tokens;
}

double bert_flops_per_token(const bert_model *b)
{
    const double D = b->d, I = b->inter;
    return 2.0 * b->cfg.num_hidden_layers * (4.0 * D * D + 2.0 * D * I);
}

/* ---- the session's working memory ------------------------------------------------- */

/* Every activation of one forward, carved from the session's arena.  Row counts are
 * upper bounds: Tm = max_tokens for the packed batch, Rm = max_rows for the rows the
 * last layer and the heads work on. */
typedef struct bert_work {
    float *x;       /* (Tm, D) the residual stream */
    float *ctx;     /* (Rm, D) attention context; in the last layer, the selected rows */
    float *ta;      /* (Rm, D) a projection before its residual add; selected queries */
    float *tb;      /* (Rm, D) the last layer's attention context; head temporaries */
    float *big;     /* (Rm, max(3D, I)) packed QKV, then the FFN's hidden layer */
    float *scores;  /* attention scratch: per pool thread, one head's (max_len, max_len)
                     * scores (at most max_len queries: the last layer's are blocked to
                     * that) and its keys transposed */
    int *rows;      /* (Rm) packed row of each selected row: masks, then [CLS] */
    par_pool *pool; /* the session's threads, for the few-rows linears */
} bert_work;

static size_t work_sizes(const bert_model *b, size_t sizes[7])
{
    const size_t D = (size_t)b->d, Tm = (size_t)b->max_tokens, Rm = (size_t)b->max_rows;
    const size_t wide = 3 * D > (size_t)b->inter ? 3 * D : (size_t)b->inter;
    sizes[0] = Tm * D * sizeof(float);
    sizes[1] = sizes[2] = sizes[3] = Rm * D * sizeof(float);
    sizes[4] = Rm * wide * sizeof(float);
    sizes[5] = attention_scratch_floats(b->max_len, b->max_len, b->dh, b->threads) *
               sizeof(float);
    sizes[6] = Rm * sizeof(int);
    size_t total = 0;
    for (int i = 0; i < 7; i++)
        total += arena_round(sizes[i]);
    return total;
}

size_t bert_arena_bytes(const bert_model *b)
{
    size_t sizes[7];
    return work_sizes(b, sizes);
}

static bool work_carve(const bert_model *b, arena *a, bert_work *w)
{
    size_t sizes[7];
    work_sizes(b, sizes);
    arena_reset(a);
    w->x = arena_alloc(a, sizes[0]);
    w->ctx = arena_alloc(a, sizes[1]);
    w->ta = arena_alloc(a, sizes[2]);
    w->tb = arena_alloc(a, sizes[3]);
    w->big = arena_alloc(a, sizes[4]);
    w->scores = arena_alloc(a, sizes[5]);
    w->rows = arena_alloc(a, sizes[6]);
    return w->x && w->ctx && w->ta && w->tb && w->big && w->scores && w->rows;
}

/* ---- forward ---------------------------------------------------------------------- */

/* Everything after self-attention, over `rows` rows: x = LN(x + attn W_o), then
 * x = LN(x + FFN(x)).  tmp (rows, D) and hid (rows, I) are scratch. */
static void layer_tail(const bert_model *b, par_pool *pool, const bert_layer *w, int rows,
                       const float *attn, float *x, float *tmp, float *hid)
{
    const int D = b->d, I = b->inter;
    const float eps = b->cfg.layer_norm_eps;
    linear_forward_packed(pool, rows, D, D, attn, w->attn_out_w, w->attn_out_b, ACT_NONE, 0.0f,
                          tmp);
    add_layernorm_rows(rows, D, x, tmp, w->ln1_g, w->ln1_b, eps, x);
    linear_forward_packed(pool, rows, D, I, x, w->ffn_in_w, w->ffn_in_b, b->act, 0.0f, hid);
    linear_forward_packed(pool, rows, I, D, hid, w->ffn_out_w, w->ffn_out_b, ACT_NONE, 0.0f,
                          tmp);
    add_layernorm_rows(rows, D, x, tmp, w->ln2_g, w->ln2_b, eps, x);
}

/* A full encoder layer over the packed batch (T rows), x in place. */
static void layer_full(const bert_model *b, const bert_layer *w, const bert_work *k,
                       const engine_bert_seq *seqs, int n, int T)
{
    const int D = b->d, D3 = 3 * b->d;
    linear_forward_packed(k->pool, T, D, D3, k->x, w->qkv_w, w->qkv_b, ACT_NONE, 0.0f, k->big);
    size_t off = 0;
    for (int s = 0; s < n; s++) {
        const int len = seqs[s].len;
        const float *qkv = k->big + off * D3;
        attention_forward(k->pool, len, len, b->heads, b->dh, qkv, D3, qkv + D, qkv + 2 * D,
                          D3, k->ctx + off * D, D, k->scores);
        off += (size_t)len;
    }
    layer_tail(b, k->pool, w, T, k->ctx, k->x, k->ta, k->big);
}

/* The last layer on the selected rows only (S of them: n_masks mask rows, then, when
 * cls, one [CLS] row per sequence); the result is k->ctx (S, D). */
static void layer_last(const bert_model *b, const bert_layer *w, const bert_work *k,
                       const engine_bert_seq *seqs, int n, int T, int S, int n_masks,
                       bool masks, bool cls)
{
    const int D = b->d, D3 = 3 * b->d;
    linear_forward_packed(k->pool, T, D, D3, k->x, w->qkv_w, w->qkv_b, ACT_NONE, 0.0f, k->big);
    gather_rows(S, D, k->rows, k->big, D3, k->ta); /* the selected rows' queries */
    size_t off = 0, m = 0;
    for (int s = 0; s < n; s++) {
        const int len = seqs[s].len;
        const float *kv = k->big + off * D3;
        /* A sequence may repeat a mask position, so it can have more mask rows than
         * tokens: query in blocks of at most max_len rows, what the scores buffer holds. */
        for (int r = 0; masks && r < seqs[s].n_mask; r += b->max_len) {
            const int rows = seqs[s].n_mask - r < b->max_len ? seqs[s].n_mask - r : b->max_len;
            attention_forward(k->pool, rows, len, b->heads, b->dh, k->ta + m * D, D, kv + D,
                              kv + 2 * D, D3, k->tb + m * D, D, k->scores);
            m += (size_t)rows;
        }
        if (cls) {
            const size_t r = (size_t)n_masks + (size_t)s;
            attention_forward(k->pool, 1, len, b->heads, b->dh, k->ta + r * D, D, kv + D,
                              kv + 2 * D, D3, k->tb + r * D, D, k->scores);
        }
        off += (size_t)len;
    }
    gather_rows(S, D, k->rows, k->x, D, k->ctx); /* their residual stream */
    layer_tail(b, k->pool, w, S, k->tb, k->ctx, k->ta, k->big);
}

/* Checks every request value the forward will index with. */
static engine_status check_batch(const bert_model *b, const engine_bert_seq *seqs, int n,
                                 bool want_mlm, bool want_nsp, int *tokens, int *masks,
                                 engine_err *err)
{
    const bert_config *c = &b->cfg;
    if (!seqs || n < 1 || n > b->max_batch)
        return engine_fail(err, ENGINE_ERR_INVALID, "batch of %d sequences is outside 1..%d",
                           n, b->max_batch);
    if (want_nsp && !b->nsp_w)
        return engine_fail(err, ENGINE_ERR_INVALID, "this model has no next-sentence head "
                           "(cls.seq_relationship)");
    long total = 0, n_masks = 0;
    for (int s = 0; s < n; s++) {
        const engine_bert_seq *q = &seqs[s];
        if (!q->ids || q->len < 1 || q->len > c->max_position_embeddings)
            return engine_fail(err, ENGINE_ERR_INVALID, "sequence %d: length %d is outside "
                               "1..%d", s, q->ids ? q->len : 0, c->max_position_embeddings);
        total += q->len;
        if (total > b->max_tokens)
            return engine_fail(err, ENGINE_ERR_INVALID, "the batch has more than %d tokens",
                               b->max_tokens);
        for (int t = 0; t < q->len; t++) {
            if (q->ids[t] < 0 || q->ids[t] >= c->vocab_size)
                return engine_fail(err, ENGINE_ERR_INVALID, "sequence %d: token %d has id "
                                   "%ld, outside 0..%d", s, t, (long)q->ids[t],
                                   c->vocab_size - 1);
            if (q->type_ids && (q->type_ids[t] < 0 || q->type_ids[t] >= c->type_vocab_size))
                return engine_fail(err, ENGINE_ERR_INVALID, "sequence %d: token %d has "
                                   "segment id %ld, outside 0..%d", s, t,
                                   (long)q->type_ids[t], c->type_vocab_size - 1);
        }
        if (!want_mlm)
            continue;
        if (q->n_mask < 0 || (q->n_mask > 0 && !q->mask_pos))
            return engine_fail(err, ENGINE_ERR_INVALID, "sequence %d: %d mask positions "
                               "without a list", s, q->n_mask);
        n_masks += q->n_mask;
        if (n_masks > b->max_tokens)
            return engine_fail(err, ENGINE_ERR_INVALID, "the batch has more than %d mask "
                               "positions", b->max_tokens);
        for (int j = 0; j < q->n_mask; j++)
            if (q->mask_pos[j] < 0 || q->mask_pos[j] >= q->len)
                return engine_fail(err, ENGINE_ERR_INVALID, "sequence %d: mask position %ld "
                                   "is outside 0..%d", s, (long)q->mask_pos[j], q->len - 1);
    }
    *tokens = (int)total;
    *masks = (int)n_masks;
    return ENGINE_OK;
}

engine_status bert_forward(const bert_model *b, arena *a, par_pool *pool,
                           const engine_bert_seq *seqs, int n, float *mlm, float *nsp,
                           engine_err *err)
{
    int T = 0, M = 0;
    engine_status st = check_batch(b, seqs, n, mlm != NULL, nsp != NULL, &T, &M, err);
    if (st != ENGINE_OK)
        return st;
    const bool cls = nsp != NULL;
    const int S = M + (cls ? n : 0);
    if (S == 0)
        return ENGINE_OK; /* nothing asked for */
    bert_work k;
    if (!work_carve(b, a, &k))
        return engine_fail(err, ENGINE_ERR_NOMEM, "session arena too small for this model "
                           "(a planning bug)");
    /* the attention scratch holds as many threads as planned at load */
    k.pool = par_pool_threads(pool) <= b->threads ? pool : NULL;
    const int D = b->d;
    const float eps = b->cfg.layer_norm_eps;

    /* Embeddings, and the packed rows the heads will read. */
    size_t off = 0;
    int m = 0;
    for (int s = 0; s < n; s++) {
        const engine_bert_seq *q = &seqs[s];
        embedding_sum(q->len, D, q->ids, q->type_ids, b->word, b->pos, b->type,
                      k.x + off * D);
        for (int j = 0; mlm && j < q->n_mask; j++)
            k.rows[m++] = (int)off + q->mask_pos[j];
        if (cls)
            k.rows[M + s] = (int)off;
        off += (size_t)q->len;
    }
    layernorm_rows(T, D, k.x, b->emb_ln_g, b->emb_ln_b, eps, k.x);

    const int L = b->cfg.num_hidden_layers;
    for (int l = 0; l + 1 < L; l++)
        layer_full(b, &b->layers[l], &k, seqs, n, T);
    layer_last(b, &b->layers[L - 1], &k, seqs, n, T, S, M, mlm != NULL, cls);

    /* Heads on the selected rows of k.ctx: masks first, then [CLS]. */
    if (mlm && M > 0) {
        linear_forward_packed(pool, M, D, D, k.ctx, b->head_w, b->head_b, b->act, 0.0f, k.ta);
        layernorm_rows(M, D, k.ta, b->head_ln_g, b->head_ln_b, eps, k.ta);
        linear_forward(pool, M, D, b->vocab, k.ta, b->decoder, b->decoder_b, ACT_NONE, 0.0f, mlm);
    }
    if (cls) {
        linear_forward_packed(pool, n, D, D, k.ctx + (size_t)M * D, b->pool_w, b->pool_b, ACT_TANH,
                              0.0f, k.tb);
        linear_forward(pool, n, D, 2, k.tb, b->nsp_w, b->nsp_b, ACT_NONE, 0.0f, nsp);
    }
    return ENGINE_OK;
}
