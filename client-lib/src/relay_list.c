/*
 * The relay list of a discovery API: fetched with libcurl (bounded body,
 * bounded time) and validated entry by entry with jansson. An invalid entry
 * is skipped, never half-used. A peer id may be in either form (base64, or
 * the libp2p PeerId that Spacedrive's relays register): it is kept in the
 * base64 form, so the relay's key is pinned the same way in both cases.
 * Unknown fields of an entry are ignored.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "identity.h"
#include "peer_id.h"
#include "pos/p2p.h"
#include "uuid.h"

#define MAX_BODY (1024 * 1024)
#define MAX_RELAYS 256

struct pos_p2p_relay_list {
    size_t n;
    pos_p2p_relay_info r[];
};

static int parse_entry(json_t *e, pos_p2p_relay_info *out)
{
    json_t *id = json_object_get(e, "id"), *pid = json_object_get(e, "peer_id");
    json_t *addrs = json_object_get(e, "addrs");
    uint8_t key[32];
    size_t i;
    json_t *a;

    if (!json_is_object(e) || !json_is_string(id) || !json_is_string(pid) || !json_is_array(addrs))
        return -1;
    if (!pos_uuid_valid(json_string_value(id), json_string_length(id)) ||
        pos_peer_id_parse_any(json_string_value(pid), json_string_length(pid), key) < 0)
        return -1;
    if (json_array_size(addrs) == 0 || json_array_size(addrs) > POS_P2P_RELAY_MAX_ADDRS)
        return -1;
    memset(out, 0, sizeof(*out));
    memcpy(out->id, json_string_value(id), json_string_length(id));
    pos_peer_id_format(key, out->peer_id);
    json_array_foreach(addrs, i, a)
    {
        if (!json_is_string(a) || !pos_addr_valid(json_string_value(a), json_string_length(a)) ||
            json_string_length(a) >= POS_P2P_ADDR_STRLEN)
            return -1;
        memcpy(out->addrs[i], json_string_value(a), json_string_length(a));
    }
    out->n_addrs = json_array_size(addrs);
    return 0;
}

int pos_p2p_relay_list_parse(const char *json, size_t len, pos_p2p_relay_list **out,
                             size_t *skipped)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), *e;
    pos_p2p_relay_list *l;
    size_t i, bad = 0;

    if (!root || !json_is_array(root)) {
        json_decref(root);
        return POS_P2P_ERR_BAD_LIST;
    }
    size_t cap = json_array_size(root) < MAX_RELAYS ? json_array_size(root) : MAX_RELAYS;
    l = calloc(1, sizeof(*l) + cap * sizeof(l->r[0]));
    if (!l) {
        json_decref(root);
        return POS_P2P_ERR_NOMEM;
    }
    json_array_foreach(root, i, e)
    {
        if (l->n >= cap)
            break;
        if (parse_entry(e, &l->r[l->n]) == 0)
            l->n++;
        else
            bad++;
    }
    json_decref(root);
    if (skipped)
        *skipped = bad;
    *out = l;
    return 0;
}

size_t pos_p2p_relay_list_count(const pos_p2p_relay_list *l)
{
    return l ? l->n : 0;
}

const pos_p2p_relay_info *pos_p2p_relay_list_get(const pos_p2p_relay_list *l, size_t i)
{
    return l && i < l->n ? &l->r[i] : NULL;
}

void pos_p2p_relay_list_del(pos_p2p_relay_list *l)
{
    free(l);
}

struct body {
    char *p;
    size_t len;
    int too_big;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct body *b = arg;
    size_t n = size * nmemb;
    char *grown;
    if (n > MAX_BODY - b->len) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    grown = realloc(b->p, b->len + n + 1);
    if (!grown)
        return 0;
    b->p = grown;
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return n;
}

int pos_p2p_relay_list_fetch(const char *api_url, int timeout_ms, pos_p2p_relay_list **out,
                             char *err, size_t errlen)
{
    char url[1024];
    struct body b = {NULL, 0, 0};
    CURL *h;
    CURLcode cc;
    long status = 0;
    size_t skipped = 0, ulen = strlen(api_url);
    int rv;

    while (ulen > 0 && api_url[ulen - 1] == '/')
        ulen--;
    if (ulen == 0 || ulen > 900 ||
        (strncmp(api_url, "http://", 7) && strncmp(api_url, "https://", 8))) {
        snprintf(err, errlen, "the API URL must start with http:// or https://");
        return POS_P2P_ERR_INVALID_ARGUMENT;
    }
    snprintf(url, sizeof(url), "%.*s/api/p2p/relays", (int)ulen, api_url);
    h = curl_easy_init();
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return POS_P2P_ERR_NOMEM;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    cc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (b.too_big) {
        snprintf(err, errlen, "%s: the relay list is larger than 1 MiB", url);
        rv = POS_P2P_ERR_BAD_LIST;
    } else if (cc != CURLE_OK) {
        snprintf(err, errlen, "%s: %s", url, curl_easy_strerror(cc));
        rv = POS_P2P_ERR_HTTP;
    } else if (status != 200) {
        snprintf(err, errlen, "%s answered HTTP %ld", url, status);
        rv = POS_P2P_ERR_HTTP;
    } else {
        rv = pos_p2p_relay_list_parse(b.p ? b.p : "", b.len, out, &skipped);
        if (rv == POS_P2P_ERR_BAD_LIST)
            snprintf(err, errlen, "%s: the answer is not a JSON array of relays", url);
        else if (rv == 0 && skipped)
            snprintf(err, errlen, "%s: %zu invalid relay entries skipped", url, skipped);
        else
            err[0] = 0;
    }
    free(b.p);
    return rv;
}

int pos_p2p_relay_pick_home(const double *rtt_ms, size_t n, int current)
{
    int best = -1;
    for (size_t i = 0; i < n; i++)
        if (rtt_ms[i] >= 0 && (best < 0 || rtt_ms[i] < rtt_ms[best]))
            best = (int)i;
    if (best < 0)
        return -1;
    if (current >= 0 && (size_t)current < n && rtt_ms[current] >= 0) {
        double cur = rtt_ms[current], b = rtt_ms[best];
        /* switch only for a clear gain: at least 30% and 10 ms faster */
        if (!(b <= cur * 0.7 && cur - b >= 10.0))
            return current;
    }
    return best;
}
