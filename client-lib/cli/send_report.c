/*
 * The summary object of `pos-p2p send --json` (see send_report.h). Built
 * with jansson so that file names of any bytes come out as valid JSON.
 */
#include "send_report.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

struct report_file {
    char *name;
    uint64_t size;
    int ok;
};

struct send_report {
    int sampled;            /* a first sample was taken */
    int first_path;         /* enum pos_p2p_path_kind of the first sample */
    int last_path;          /* ... of the latest sample */
    int was_direct;         /* a sample was direct */
    int64_t start_ms;       /* the first sample */
    int64_t upgraded_ms;    /* the first direct sample after a relayed start, or -1 */
    uint64_t last_total;    /* the session's bytes sent + received at the latest sample */
    uint64_t bytes_relayed; /* session bytes (UDP payload, both ways) per path */
    uint64_t bytes_direct;
    uint32_t circuit_id; /* our side's circuit id while relayed (the last one seen) */
    char relay_id[POS_P2P_UUID_STRLEN];
    char remote[POS_P2P_ADDR_STRLEN]; /* the latest sample's remote address */
    double rtt_ms;
    int have_path; /* send_report_path was called: |pi| is the library's account */
    pos_p2p_path_info pi;
    struct report_file *files;
    int n_files, cap_files;
};

send_report *send_report_new(int n_files)
{
    send_report *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cap_files = n_files > 0 ? n_files : 0;
    r->files = r->cap_files ? calloc((size_t)r->cap_files, sizeof(*r->files)) : NULL;
    if (r->cap_files && !r->files) {
        free(r);
        return NULL;
    }
    r->upgraded_ms = -1;
    return r;
}

void send_report_del(send_report *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_files; i++)
        free(r->files[i].name);
    free(r->files);
    free(r);
}

void send_report_sample(send_report *r, const pos_p2p_session_status *st, int64_t now_ms)
{
    uint64_t total = st->bytes_sent + st->bytes_received;
    if (st->path != POS_P2P_PATH_DIRECT && st->path != POS_P2P_PATH_RELAYED)
        return; /* not connected (yet): nothing to attribute */
    if (!r->sampled) {
        r->sampled = 1;
        r->first_path = r->last_path = st->path;
        r->start_ms = now_ms;
    }
    /* what moved since the last sample went over the path of that sample */
    if (total > r->last_total) {
        if (r->last_path == POS_P2P_PATH_DIRECT)
            r->bytes_direct += total - r->last_total;
        else
            r->bytes_relayed += total - r->last_total;
    }
    r->last_total = total;
    if (st->path == POS_P2P_PATH_DIRECT) {
        if (!r->was_direct && r->first_path == POS_P2P_PATH_RELAYED)
            r->upgraded_ms = now_ms;
        r->was_direct = 1;
    }
    /* the circuit stays the session's while direct: a session already direct at its first
     * sample (a fast upgrade) still names it */
    if (st->circuit_id) {
        r->circuit_id = st->circuit_id;
        snprintf(r->relay_id, sizeof(r->relay_id), "%s", st->relay_id);
    }
    r->last_path = st->path;
    snprintf(r->remote, sizeof(r->remote), "%s", st->remote);
    r->rtt_ms = st->rtt_ms;
}

void send_report_path(send_report *r, const pos_p2p_path_info *pi)
{
    if (pi->path != POS_P2P_PATH_DIRECT && pi->path != POS_P2P_PATH_RELAYED)
        return;
    r->have_path = 1;
    r->pi = *pi;
}

void send_report_file(send_report *r, const char *name, uint64_t size, int ok)
{
    if (r->n_files >= r->cap_files)
        return;
    struct report_file *f = &r->files[r->n_files];
    f->name = strdup(name);
    if (!f->name)
        return;
    f->size = size;
    f->ok = ok ? 1 : 0;
    r->n_files++;
}

static const char *path_name(const send_report *r)
{
    if (!r->sampled)
        return "none";
    if (r->have_path && r->pi.upgraded) /* also when the first sample came after the upgrade */
        return "relayed-then-direct";
    if (r->first_path == POS_P2P_PATH_DIRECT)
        return "direct";
    if (r->have_path)
        return "relayed";
    return r->was_direct ? "relayed-then-direct" : "relayed";
}

/* name_json: |name| as a JSON string; a name that is no UTF-8 has its non-ASCII bytes as '?'. */
static json_t *name_json(const char *name)
{
    json_t *v = json_string(name);
    if (v)
        return v;
    char *copy = strdup(name);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    v = json_string(copy);
    free(copy);
    return v;
}

/* set: json_object_set_new that remembers a failure in |*bad|. */
static void set(json_t *o, const char *key, json_t *v, int *bad)
{
    if (!v || json_object_set_new(o, key, v) != 0)
        *bad = 1;
}

int send_report_print(const send_report *r, FILE *out, uint64_t bytes, double seconds, int ok)
{
    json_t *o = json_object(), *files = json_array();
    int bad = !o || !files, files_ok = 0;
    for (int i = 0; i < r->n_files && !bad; i++) {
        json_t *f = json_object();
        bad = !f;
        set(f, "file", name_json(r->files[i].name), &bad);
        set(f, "size", json_integer((json_int_t)r->files[i].size), &bad);
        set(f, "ok", json_boolean(r->files[i].ok), &bad);
        if (bad || json_array_append_new(files, f) != 0) {
            json_decref(f);
            bad = 1;
        }
        files_ok += r->files[i].ok;
    }
    if (!bad) {
        set(o, "ok", json_boolean(ok), &bad);
        set(o, "path", json_string(path_name(r)), &bad);
        /* the library's counts when it gave them (exact per path), else the samples' */
        int64_t up = r->upgraded_ms >= 0 ? r->upgraded_ms - r->start_ms : -1;
        uint64_t relayed = r->bytes_relayed, direct = r->bytes_direct;
        if (r->have_path) {
            up = r->pi.upgraded ? r->pi.upgraded_after_ms : -1;
            relayed = r->pi.bytes_relayed;
            direct = r->pi.bytes_direct;
        }
        set(o, "upgraded_after_ms", up >= 0 ? json_integer((json_int_t)up) : json_null(), &bad);
        set(o, "bytes_relayed", json_integer((json_int_t)relayed), &bad);
        set(o, "bytes_direct", json_integer((json_int_t)direct), &bad);
        set(o, "bytes", json_integer((json_int_t)bytes), &bad);
        set(o, "seconds", json_real(seconds), &bad);
        set(o, "remote", r->sampled ? json_string(r->remote) : json_null(), &bad);
        set(o, "relay_id", r->relay_id[0] ? json_string(r->relay_id) : json_null(), &bad);
        set(o, "circuit_id", r->circuit_id ? json_integer(r->circuit_id) : json_null(), &bad);
        set(o, "rtt_ms", json_real(r->rtt_ms), &bad);
        set(o, "punch_attempts", json_integer(r->have_path ? r->pi.attempts : 0), &bad);
        set(o, "punch_stopped",
            r->have_path && r->pi.punch_stopped == POS_P2P_PUNCH_STOPPED_NAT ? json_string("nat")
                                                                             : json_null(),
            &bad);
        set(o, "files_sent", json_integer(r->n_files), &bad);
        set(o, "files_ok", json_integer(files_ok), &bad);
        set(o, "files", files, &bad);
        files = NULL; /* owned by |o| now, whether or not that worked */
    }
    char *text = bad ? NULL : json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
    int rc = -1;
    if (text && fprintf(out, "%s\n", text) > 0 && fflush(out) == 0)
        rc = 0;
    free(text);
    json_decref(files);
    json_decref(o);
    return rc;
}
