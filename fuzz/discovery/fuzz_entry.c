/*
 * libFuzzer target for relay entry validation (discovery-api/entry.c), the
 * parser every POST body reaches. Besides "no crash, no leak, no undefined
 * behaviour", it checks two properties: an accepted entry's canonical form
 * parses back to the same entry, and an error is one printable ASCII
 * sentence that never echoes raw input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "entry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(const char *err)
{
    if (!err[0])
        abort();
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pos_entry e, again;
    char err[POS_ERR_LEN], json[POS_ENTRY_JSON_MAX], id[POS_UUID_STRLEN];

    if (pos_entry_parse((const char *)data, size, &e, err, sizeof(err)) != 0) {
        check_error(err);
    } else {
        int n = pos_entry_format(&e, json, sizeof(json));
        if (n < 0 || pos_entry_parse(json, (size_t)n, &again, err, sizeof(err)) != 0 ||
            memcmp(&e, &again, sizeof(e)) != 0)
            abort();
    }
    /* The DELETE path's id parser on the same bytes. */
    if (pos_entry_id_parse((const char *)data, size, id) == 0 && strlen(id) != 36)
        abort();
    return 0;
}
