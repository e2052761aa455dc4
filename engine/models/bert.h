/* bert.h — the native description of a BERT checkpoint (Hugging Face layout),
 * filled by proto/model_dir from config.json (+ tokenizer_config.json) and consumed
 * by engine_bert_load().  Plain values: nothing to free. */
#ifndef MODELD_ENGINE_BERT_H
#define MODELD_ENGINE_BERT_H

#include <stdbool.h>

typedef struct bert_config {
    int vocab_size;
    int hidden_size;              /* D */
    int num_hidden_layers;        /* L */
    int num_attention_heads;      /* A; D % A == 0 */
    int intermediate_size;        /* FFN width */
    int max_position_embeddings;  /* longest sequence, [CLS] and [SEP] included */
    int type_vocab_size;
    float layer_norm_eps;
    bool hidden_act_relu;         /* false: exact erf GELU ("gelu"), the only other one */
} bert_config;

#endif
