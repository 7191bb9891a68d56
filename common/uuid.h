/*
 * UUIDs in their canonical text form (8-4-4-4-12 hex digits), used as relay
 * ids. Parsing is strict; generation makes random version 4 UUIDs.
 */
#ifndef POS_UUID_H
#define POS_UUID_H

#include <stddef.h>

#define POS_UUID_STRLEN 37 /* 36 characters and a NUL */

/* pos_uuid_valid says whether |len| bytes of |s| are a canonical UUID (either case). */
int pos_uuid_valid(const char *s, size_t len);

/* pos_uuid_v4 writes a new random UUID, lower case, into |out|. */
void pos_uuid_v4(char out[POS_UUID_STRLEN]);

#endif
