/*
 * Registration with the discovery API (see registration.h): curl multi on
 * the relay's libev loop. The p2p secret goes only into the Authorization
 * header, which is wiped before it is freed.
 */
#include "registration.h"

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define HTTP_TIMEOUT_MS 5000
#define REGISTER_BACKOFF_MAX 5.0

struct http_req {
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char resp[1024];
    size_t resp_len;
};

struct curl_sock {
    ev_io io;
    curl_socket_t fd;
};

struct relay_registration {
    struct ev_loop *loop;
    const relay_config *cfg;
    char addrs[RELAY_MAX_ADDRS][POS_ADDR_STRLEN];
    size_t n_addrs;
    char peer_id[POS_PEER_ID_STRLEN];
    CURLM *multi;
    ev_timer curl_timer;
    ev_timer reg_timer;
    struct http_req *reg; /* POST in flight */
    double reg_backoff;
    int reg_ok_before; /* last attempt succeeded: log only changes */
    unsigned reg_interval_s;
    int shut_down;
    relay_services_stats stats; /* registrations only */
};

static void check_multi_done(relay_registration *s);

static void on_curl_io(struct ev_loop *loop, ev_io *w, int revents)
{
    relay_registration *s = w->data;
    struct curl_sock *cs = (struct curl_sock *)w;
    int running;
    int action =
        ((revents & EV_READ) ? CURL_CSELECT_IN : 0) | ((revents & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    (void)loop;
    curl_multi_socket_action(s->multi, cs->fd, action, &running);
    check_multi_done(s);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    relay_registration *s = userp;
    struct curl_sock *cs = socketp;
    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (cs) {
            ev_io_stop(s->loop, &cs->io);
            free(cs);
        }
        curl_multi_assign(s->multi, fd, NULL);
        return 0;
    }
    if (!cs) {
        cs = calloc(1, sizeof(*cs));
        if (!cs)
            return -1;
        cs->fd = fd;
        curl_multi_assign(s->multi, fd, cs);
    } else {
        ev_io_stop(s->loop, &cs->io);
    }
    int events = ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    ev_io_init(&cs->io, on_curl_io, fd, events);
    cs->io.data = s;
    ev_io_start(s->loop, &cs->io);
    return 0;
}

static void on_curl_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_registration *s = w->data;
    int running;
    (void)loop;
    (void)revents;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_multi_done(s);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    relay_registration *s = userp;
    (void)multi;
    ev_timer_stop(s->loop, &s->curl_timer);
    if (timeout_ms >= 0) {
        ev_timer_set(&s->curl_timer, timeout_ms / 1000.0, 0.);
        ev_timer_start(s->loop, &s->curl_timer);
    }
    return 0;
}

static size_t on_http_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_req *h = userp;
    size_t n = size * nmemb, room = sizeof(h->resp) - 1 - h->resp_len;
    memcpy(h->resp + h->resp_len, data, n < room ? n : room); /* the rest is ignored */
    h->resp_len += n < room ? n : room;
    h->resp[h->resp_len] = '\0';
    return n;
}

static void http_req_free(struct http_req *h)
{
    if (!h)
        return;
    if (h->easy)
        curl_easy_cleanup(h->easy);
    /* The Authorization header holds the p2p secret. */
    for (struct curl_slist *l = h->headers; l; l = l->next)
        sodium_memzero(l->data, strlen(l->data));
    curl_slist_free_all(h->headers);
    free(h->body);
    free(h);
}

/* A request to the discovery API; |body| is taken (may be NULL). */
static struct http_req *http_req_new(relay_registration *s, const char *method, const char *url,
                                     char *body, long timeout_ms)
{
    struct http_req *h = calloc(1, sizeof(*h));
    if (!h) {
        free(body);
        return NULL;
    }
    h->body = body;
    h->easy = curl_easy_init();
    size_t alen = strlen(s->cfg->p2p_secret) + 32;
    char *auth = malloc(alen);
    if (!h->easy || !auth) {
        free(auth);
        http_req_free(h);
        return NULL;
    }
    snprintf(auth, alen, "Authorization: Bearer %s", s->cfg->p2p_secret);
    struct curl_slist *l = curl_slist_append(NULL, auth);
    sodium_memzero(auth, alen);
    free(auth);
    if (l)
        h->headers = l;
    if (l && body)
        l = curl_slist_append(h->headers, "Content-Type: application/json");
    if (!l) {
        http_req_free(h);
        return NULL;
    }
    curl_easy_setopt(h->easy, CURLOPT_URL, url);
    curl_easy_setopt(h->easy, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->headers);
    if (body)
        curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h->easy, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->easy, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 2000 ? timeout_ms : 2000L);
    curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, on_http_body);
    curl_easy_setopt(h->easy, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
    curl_easy_setopt(h->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    return h;
}

/* The entry this relay registers: {id, peer_id, addrs}. */
static char *entry_json(const relay_registration *s)
{
    json_t *o = json_object(), *a = json_array();
    char *text = NULL;
    if (!o || !a) {
        json_decref(o);
        json_decref(a);
        return NULL;
    }
    for (size_t i = 0; i < s->n_addrs; i++)
        json_array_append_new(a, json_string(s->addrs[i]));
    json_object_set_new(o, "id", json_string(s->cfg->id));
    json_object_set_new(o, "peer_id", json_string(s->peer_id));
    json_object_set_new(o, "addrs", a);
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    return text;
}

static void schedule_registration(relay_registration *s, double delay)
{
    ev_timer_stop(s->loop, &s->reg_timer);
    ev_timer_set(&s->reg_timer, delay, 0.);
    ev_timer_start(s->loop, &s->reg_timer);
}

/* The API may say how long a registration lives ({"ttl": seconds}); we refresh at a third. */
static unsigned interval_from_reply(const relay_registration *s, const char *body)
{
    unsigned interval = s->cfg->register_interval_s ? s->cfg->register_interval_s : 10;
    json_t *o = json_loads(body, 0, NULL);
    json_t *ttl = o ? json_object_get(o, "ttl") : NULL;
    if (json_is_integer(ttl) && json_integer_value(ttl) >= 3 &&
        json_integer_value(ttl) / 3 < (json_int_t)interval)
        interval = (unsigned)(json_integer_value(ttl) / 3);
    json_decref(o);
    return interval;
}

static void registration_done(relay_registration *s, CURLcode rc)
{
    struct http_req *h = s->reg;
    long status = 0;
    s->reg = NULL;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status >= 200 && status < 300) {
        s->stats.registrations_ok++;
        s->reg_backoff = 0;
        if (!s->reg_ok_before)
            pos_log_info("registered with the discovery API at %s", s->cfg->api_url);
        s->reg_ok_before = 1;
        s->reg_interval_s = interval_from_reply(s, h->resp);
        schedule_registration(s, s->reg_interval_s);
    } else {
        s->stats.registrations_failed++;
        s->reg_backoff = s->reg_backoff ? s->reg_backoff * 2 : 0.5;
        if (s->reg_backoff > REGISTER_BACKOFF_MAX)
            s->reg_backoff = REGISTER_BACKOFF_MAX;
        if (s->reg_ok_before || s->stats.registrations_failed == 1) {
            if (rc != CURLE_OK)
                pos_log_warn("cannot register with the discovery API at %s: %s; retrying",
                             s->cfg->api_url, curl_easy_strerror(rc));
            else
                pos_log_warn("the discovery API at %s refused the registration (HTTP %ld%s); "
                             "retrying",
                             s->cfg->api_url, status,
                             status == 401 || status == 403 ? ": check p2p_secret" : "");
        }
        s->reg_ok_before = 0;
        schedule_registration(s, s->reg_backoff);
    }
    curl_multi_remove_handle(s->multi, h->easy);
    http_req_free(h);
}

static void check_multi_done(relay_registration *s)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(s->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct http_req *h = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        CURLcode rc = msg->data.result;
        if (h && h == s->reg) {
            registration_done(s, rc);
        } else {
            curl_multi_remove_handle(s->multi, msg->easy_handle);
            http_req_free(h);
        }
    }
}

static void on_reg_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    relay_registration *s = w->data;
    char url[700];
    (void)loop;
    (void)revents;
    if (s->reg || s->shut_down)
        return;
    snprintf(url, sizeof(url), "%s/api/p2p/relays", s->cfg->api_url);
    char *body = entry_json(s);
    s->reg = body ? http_req_new(s, "POST", url, body, HTTP_TIMEOUT_MS) : NULL;
    if (!s->reg || curl_multi_add_handle(s->multi, s->reg->easy) != CURLM_OK) {
        http_req_free(s->reg);
        s->reg = NULL;
        schedule_registration(s, 1.0);
    }
}

static int registration_start(relay_registration *s)
{
    s->multi = curl_multi_init();
    if (!s->multi)
        return -1;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    if (s->cfg->api_url[0])
        schedule_registration(s, 0.);
    return 0;
}

static void deregister(relay_registration *s, long timeout_ms)
{
    char url[700];
    snprintf(url, sizeof(url), "%s/api/p2p/relays/%s", s->cfg->api_url, s->cfg->id);
    struct http_req *h = http_req_new(s, "DELETE", url, NULL, timeout_ms);
    if (!h)
        return;
    CURLcode rc = curl_easy_perform(h->easy);
    long status = 0;
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        pos_log_warn("could not deregister from the discovery API: %s", curl_easy_strerror(rc));
    else if (status >= 300 && status != 404)
        pos_log_warn("the discovery API refused the deregistration (HTTP %ld)", status);
    else
        pos_log_info("deregistered from the discovery API");
    http_req_free(h);
}

relay_registration *relay_registration_new(struct ev_loop *loop, const relay_config *cfg,
                                           const char (*announce)[POS_ADDR_STRLEN],
                                           size_t n_announce)
{
    static int curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return NULL;
        curl_ready = 1;
    }
    relay_registration *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    s->cfg = cfg;
    pos_identity_peer_id(&cfg->identity, s->peer_id);
    const char(*src)[POS_ADDR_STRLEN] = cfg->n_public_addrs ? cfg->public_addrs : announce;
    size_t n = cfg->n_public_addrs ? cfg->n_public_addrs : n_announce;
    for (size_t i = 0; src && i < n && i < RELAY_MAX_ADDRS; i++)
        snprintf(s->addrs[s->n_addrs++], POS_ADDR_STRLEN, "%s", src[i]);
    s->reg_interval_s = cfg->register_interval_s ? cfg->register_interval_s : 10;
    ev_timer_init(&s->curl_timer, on_curl_timer, 0., 0.);
    s->curl_timer.data = s;
    ev_timer_init(&s->reg_timer, on_reg_timer, 0., 0.);
    s->reg_timer.data = s;
    if (registration_start(s) != 0) {
        relay_registration_del(s);
        return NULL;
    }
    return s;
}

void relay_registration_shutdown(relay_registration *s, long timeout_ms)
{
    s->shut_down = 1;
    ev_timer_stop(s->loop, &s->reg_timer);
    if (s->reg) {
        curl_multi_remove_handle(s->multi, s->reg->easy);
        http_req_free(s->reg);
        s->reg = NULL;
    }
    if (s->cfg->api_url[0])
        deregister(s, timeout_ms);
}

void relay_registration_stats_add(const relay_registration *s, relay_services_stats *out)
{
    out->registrations_ok += s->stats.registrations_ok;
    out->registrations_failed += s->stats.registrations_failed;
}

void relay_registration_del(relay_registration *s)
{
    if (!s)
        return;
    ev_timer_stop(s->loop, &s->reg_timer);
    ev_timer_stop(s->loop, &s->curl_timer);
    if (s->reg) {
        curl_multi_remove_handle(s->multi, s->reg->easy);
        http_req_free(s->reg);
    }
    if (s->multi)
        curl_multi_cleanup(s->multi); /* removes the remaining sockets through curl_socket_cb */
    free(s);
}
