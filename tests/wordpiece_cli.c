/* wordpiece_cli — tokenizes each line of stdin with engine/wordpiece and prints the
 * ids space-separated, for tests/wordpiece_golden.py to compare with the reference.
 *   wordpiece_cli VOCAB [--cased]
 * Lines are \n-terminated UTF-8; "\t" in a line is kept (the reference sees it too). */
#include <stdio.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>

#include "engine/wordpiece.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: wordpiece_cli VOCAB [--cased]\n");
        return 2;
    }
    bool lower = !(argc > 2 && strcmp(argv[2], "--cased") == 0);
    engine_err err;
    wordpiece *wp;
    if (wordpiece_load(argv[1], lower, &wp, &err) != ENGINE_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    static int32_t ids[1 << 16];
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    /* getline, not fgets: a line may hold NUL bytes, which the tokenizer must drop */
    while ((got = getline(&line, &cap, stdin)) > 0) {
        size_t len = (size_t)got;
        if (line[len - 1] == '\n')
            len--;
        int n;
        if (wordpiece_encode(wp, line, len, ids, (int)(sizeof ids / sizeof ids[0]), &n, &err) !=
            ENGINE_OK) {
            printf("ERROR %s\n", err.msg);
            continue;
        }
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        char *text = wordpiece_decode(wp, ids, n, true);
        printf("\t%s\n", text ? text : "");
        free(text);
    }
    free(line);
    wordpiece_free(wp);
    return 0;
}
