/*
 * The contacts store of pos-p2p (see contacts.h); the cards themselves are
 * the library's (pos_mdns_card_parse/_format in pos/p2p.h). Presence keys
 * are secrets: wiped after use, files written 0600 through a temporary file
 * and rename, never logged.
 */
#include "contacts.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"
#include "pos/mdns.h"

#define B64 sodium_base64_VARIANT_ORIGINAL_NO_PADDING

int mdns_identity_path(const char *explicit_path, char *out, size_t cap)
{
    const char *e;
    int n;
    if (explicit_path && *explicit_path)
        n = snprintf(out, cap, "%s", explicit_path);
    else if ((e = getenv("POS_IDENTITY")) && *e)
        n = snprintf(out, cap, "%s", e);
    else if ((e = getenv("XDG_CONFIG_HOME")) && *e)
        n = snprintf(out, cap, "%s/pos/identity", e);
    else if ((e = getenv("HOME")) && *e)
        n = snprintf(out, cap, "%s/.config/pos/identity", e);
    else
        return -1;
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

static int sibling(const char *identity_path, const char *name, char *out, size_t cap)
{
    char copy[4096];
    snprintf(copy, sizeof(copy), "%s", identity_path);
    int n = snprintf(out, cap, "%s/%s", dirname(copy), name);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* Writes |data| to |path| atomically with mode 0600. */
static int write_private(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, data, len);
    if (fsync(fd) < 0 || close(fd) < 0 || w != (ssize_t)len || rename(tmp, path) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int mdns_presence_key_load_or_create(const char *identity_path, uint8_t key[32], char *err,
                                     size_t errlen)
{
    char path[4200], text[64];
    size_t bl;
    if (sibling(identity_path, "presence.key", path, sizeof(path))) {
        snprintf(err, errlen, "path too long: %s", identity_path);
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    FILE *f = fopen(path, "r");
    if (f) {
        struct stat st;
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        int perm_bad = fstat(fileno(f), &st) == 0 && (st.st_mode & 077);
        fclose(f);
        text[n] = 0;
        while (n && (text[n - 1] == '\n' || text[n - 1] == '\r'))
            text[--n] = 0;
        int bad = perm_bad || sodium_base642bin(key, 32, text, n, NULL, &bl, NULL, B64) || bl != 32;
        sodium_memzero(text, sizeof(text));
        if (bad) {
            snprintf(err, errlen, "%s: %s", path,
                     perm_bad ? "readable by group or others (chmod 600 it)"
                              : "not a presence key (43 characters of base64 expected)");
            return POS_P2P_ERR_MDNS_CONTACTS;
        }
        return 0;
    }
    if (errno != ENOENT) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    mkdir(dirname(dir), 0700);
    randombytes_buf(key, 32);
    sodium_bin2base64(text, sizeof(text), key, 32, B64);
    size_t tl = strlen(text);
    text[tl++] = '\n';
    int rc = write_private(path, text, tl);
    sodium_memzero(text, sizeof(text));
    if (rc) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    return 0;
}

int mdns_contacts_load(const char *identity_path, struct mdns_contact_entry *out, size_t cap,
                       char *err, size_t errlen)
{
    char path[4200];
    json_error_t je;
    if (sibling(identity_path, "contacts.json", path, sizeof(path))) {
        snprintf(err, errlen, "path too long: %s", identity_path);
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    if (access(path, F_OK) != 0)
        return 0;
    json_t *root = json_load_file(path, 0, &je);
    if (!root || !json_is_array(root)) {
        snprintf(err, errlen, "%s: not a JSON array of contacts%s%s", path, root ? "" : ": ",
                 root ? "" : je.text);
        json_decref(root);
        return POS_P2P_ERR_MDNS_CONTACTS;
    }
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(root, i, v)
    {
        const char *pid = json_string_value(json_object_get(v, "peer_id"));
        const char *key = json_string_value(json_object_get(v, "presence_key"));
        size_t bl;
        uint8_t pk[32];
        if (!pid || !key || pos_peer_id_parse(pid, strlen(pid), pk) ||
            sodium_base642bin(out[n < cap ? n : 0].key, 32, key, strlen(key), NULL, &bl, NULL,
                              B64) ||
            bl != 32) {
            snprintf(err, errlen, "%s: entry %zu needs a valid \"peer_id\" and \"presence_key\"",
                     path, i);
            json_decref(root);
            return POS_P2P_ERR_MDNS_CONTACTS;
        }
        if (n < cap) {
            snprintf(out[n].peer_id, sizeof(out[n].peer_id), "%s", pid);
            n++;
        }
    }
    json_decref(root);
    return (int)n;
}

int mdns_contacts_add(const char *identity_path, const struct mdns_contact_entry *e, char *err,
                      size_t errlen)
{
    enum { CAP = 256 };
    struct mdns_contact_entry *all = calloc(CAP, sizeof(*all));
    char path[4200];
    int rc = POS_P2P_ERR_MDNS_CONTACTS;
    if (!all)
        return POS_P2P_ERR_NOMEM;
    int n = mdns_contacts_load(identity_path, all, CAP, err, errlen);
    if (n < 0)
        goto out;
    int slot = n;
    for (int i = 0; i < n; i++) {
        if (!strcmp(all[i].peer_id, e->peer_id))
            slot = i;
    }
    if (slot == CAP) {
        snprintf(err, errlen, "too many contacts (at most %d)", CAP);
        goto out;
    }
    all[slot] = *e;
    if (slot == n)
        n++;
    json_t *root = json_array();
    for (int i = 0; i < n; i++) {
        char kb[sodium_base64_ENCODED_LEN(32, B64)];
        sodium_bin2base64(kb, sizeof(kb), all[i].key, 32, B64);
        json_array_append_new(
            root, json_pack("{s:s, s:s}", "peer_id", all[i].peer_id, "presence_key", kb));
        sodium_memzero(kb, sizeof(kb));
    }
    char *text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text || sibling(identity_path, "contacts.json", path, sizeof(path))) {
        free(text);
        goto out;
    }
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    mkdir(dirname(dir), 0700);
    if (write_private(path, text, strlen(text)) == 0)
        rc = 0;
    else
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    sodium_memzero(text, strlen(text));
    free(text);
out:
    sodium_memzero(all, CAP * sizeof(*all));
    free(all);
    return rc;
}
