/* JSON configuration files with errors that name file, key and expectation. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int pos_config_load(pos_config *c, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    FILE *f;

    memset(c, 0, sizeof(*c));
    snprintf(c->path, sizeof(c->path), "%s", path);
    f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read the configuration file: %s", path, strerror(errno));
        return POS_CONFIG_ERR_IO;
    }
    c->root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    fclose(f);
    if (!c->root) {
        snprintf(err, errlen, "%s: line %d, column %d: not valid JSON: %s", path, jerr.line,
                 jerr.column, jerr.text);
        return POS_CONFIG_ERR_SYNTAX;
    }
    if (!json_is_object(c->root)) {
        json_decref(c->root);
        c->root = NULL;
        snprintf(err, errlen, "%s: expected a JSON object at the top level", path);
        return POS_CONFIG_ERR_SYNTAX;
    }
    return 0;
}

void pos_config_free(pos_config *c)
{
    if (c->root)
        json_decref(c->root);
    c->root = NULL;
}

int pos_config_value_error(const pos_config *c, const char *key, const char *expected, char *err,
                           size_t errlen)
{
    snprintf(err, errlen, "%s: key \"%s\": expected %s", c->path, key, expected);
    return POS_CONFIG_ERR_VALUE;
}

/* Common start of every getter: absent or null means absent. */
static int lookup(const pos_config *c, const char *key, int required, const char *expected,
                  json_t **v, char *err, size_t errlen)
{
    *v = json_object_get(c->root, key);
    if (*v && !json_is_null(*v))
        return 0;
    if (!required)
        return POS_CONFIG_ABSENT;
    snprintf(err, errlen, "%s: key \"%s\" is missing: expected %s", c->path, key, expected);
    return POS_CONFIG_ERR_VALUE;
}

int pos_config_string(const pos_config *c, const char *key, int required, size_t max_len,
                      const char **out, char *err, size_t errlen)
{
    char expected[96];
    json_t *v;
    snprintf(expected, sizeof(expected), "a non-empty string of at most %zu bytes", max_len);
    int rc = lookup(c, key, required, expected, &v, err, errlen);
    if (rc != 0)
        return rc;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max_len ||
        strlen(json_string_value(v)) != json_string_length(v))
        return pos_config_value_error(c, key, expected, err, errlen);
    *out = json_string_value(v);
    return 0;
}

int pos_config_int(const pos_config *c, const char *key, int required, long long min, long long max,
                   long long *out, char *err, size_t errlen)
{
    char expected[96];
    json_t *v;
    snprintf(expected, sizeof(expected), "an integer from %lld to %lld", min, max);
    int rc = lookup(c, key, required, expected, &v, err, errlen);
    if (rc != 0)
        return rc;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return pos_config_value_error(c, key, expected, err, errlen);
    *out = json_integer_value(v);
    return 0;
}

int pos_config_bool(const pos_config *c, const char *key, int required, int *out, char *err,
                    size_t errlen)
{
    json_t *v;
    int rc = lookup(c, key, required, "true or false", &v, err, errlen);
    if (rc != 0)
        return rc;
    if (!json_is_boolean(v))
        return pos_config_value_error(c, key, "true or false", err, errlen);
    *out = json_is_true(v);
    return 0;
}

int pos_config_string_array(const pos_config *c, const char *key, int required, size_t max_items,
                            json_t **out, char *err, size_t errlen)
{
    char expected[96];
    json_t *v, *item;
    size_t i;
    snprintf(expected, sizeof(expected), "an array of at most %zu non-empty strings", max_items);
    int rc = lookup(c, key, required, expected, &v, err, errlen);
    if (rc != 0)
        return rc;
    if (!json_is_array(v) || json_array_size(v) > max_items)
        return pos_config_value_error(c, key, expected, err, errlen);
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item) || json_string_length(item) == 0)
            return pos_config_value_error(c, key, expected, err, errlen);
    }
    *out = v;
    return 0;
}

int pos_config_check_keys(const pos_config *c, const char *const *allowed, char *err, size_t errlen)
{
    const char *key;
    json_t *v;
    json_object_foreach(c->root, key, v)
    {
        int known = 0;
        for (const char *const *a = allowed; *a; a++) {
            if (strcmp(*a, key) == 0) {
                known = 1;
                break;
            }
        }
        if (!known) {
            snprintf(err, errlen, "%s: key \"%s\" is not a known setting", c->path, key);
            return POS_CONFIG_ERR_VALUE;
        }
    }
    return 0;
}
