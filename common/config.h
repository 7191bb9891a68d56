/*
 * JSON configuration files (jansson). Every error names the file, the key and
 * what was expected, in one sentence a user can act on, e.g.
 *   relay.json: key "port": expected an integer from 1 to 65535
 * The loaded document is read-only for the getters; strings returned point
 * into it and live until pos_config_free.
 */
#ifndef POS_CONFIG_H
#define POS_CONFIG_H

#include <jansson.h>
#include <stddef.h>

#define POS_ERR_LEN 512

typedef struct pos_config {
    char path[1024];
    json_t *root; /* a JSON object */
} pos_config;

/* Results of the getters besides 0 (found and valid). */
#define POS_CONFIG_ABSENT 1      /* optional key missing: *out untouched */
#define POS_CONFIG_ERR_IO -1     /* file unreadable */
#define POS_CONFIG_ERR_SYNTAX -2 /* not JSON, or not an object */
#define POS_CONFIG_ERR_VALUE -3  /* key missing when required, or of the wrong type or range */

/* pos_config_load reads and parses |path|. On error |c| needs no free. */
int pos_config_load(pos_config *c, const char *path, char *err, size_t errlen);

/* pos_config_free releases the document. */
void pos_config_free(pos_config *c);

/* pos_config_string: a non-empty string of at most |max_len| bytes. */
int pos_config_string(const pos_config *c, const char *key, int required, size_t max_len,
                      const char **out, char *err, size_t errlen);

/* pos_config_int: an integer in [min, max]. */
int pos_config_int(const pos_config *c, const char *key, int required, long long min, long long max,
                   long long *out, char *err, size_t errlen);

/* pos_config_bool: true or false. */
int pos_config_bool(const pos_config *c, const char *key, int required, int *out, char *err,
                    size_t errlen);

/*
 * pos_config_string_array: an array of 0..|max_items| non-empty strings;
 * |*out| is the jansson array (borrowed) for the caller to walk.
 */
int pos_config_string_array(const pos_config *c, const char *key, int required, size_t max_items,
                            json_t **out, char *err, size_t errlen);

/*
 * pos_config_check_keys refuses keys not in |allowed| (NULL-terminated), so a
 * typo does not silently fall back to a default.
 */
int pos_config_check_keys(const pos_config *c, const char *const *allowed, char *err,
                          size_t errlen);

/*
 * pos_config_value_error writes the standard sentence for |key| with
 * |expected| into |err| and returns POS_CONFIG_ERR_VALUE; for callers that
 * validate beyond type and range (an address, a URL).
 */
int pos_config_value_error(const pos_config *c, const char *key, const char *expected, char *err,
                           size_t errlen);

#endif
