/* Unit test of common/cid_map.c: the connection-id map of the endpoint (and, later, the relay). */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "cid_map.h"

static void test_basic(void)
{
    pos_cid_map *m = pos_cid_map_new(0);
    uint8_t a[16], b[16], c20[20], d[8];
    int x, y;
    randombytes_buf(a, sizeof(a));
    memcpy(b, a, sizeof(b));
    b[15] ^= 1;
    randombytes_buf(c20, sizeof(c20));
    memcpy(d, a, sizeof(d)); /* a prefix of |a|: another id */
    CHECK(m != NULL);
    CHECK(pos_cid_map_add(m, a, 16, &x) == 0);
    CHECK(pos_cid_map_add(m, c20, 20, &y) == 0);
    CHECK(pos_cid_map_add(m, d, 8, &y) == 0);
    CHECK(pos_cid_map_find(m, a, 16) == &x);
    CHECK(pos_cid_map_find(m, b, 16) == NULL);
    CHECK(pos_cid_map_find(m, a, 8) == &y);
    CHECK(pos_cid_map_find(m, c20, 20) == &y);
    CHECK(pos_cid_map_count(m) == 3);
    /* bad lengths are refused, never read */
    CHECK(pos_cid_map_add(m, a, 0, &x) == -1);
    CHECK(pos_cid_map_add(m, c20, 21, &x) == -1);
    CHECK(pos_cid_map_add(m, a, 16, NULL) == -1);
    CHECK(pos_cid_map_find(m, c20, 21) == NULL);
    CHECK(pos_cid_map_find(m, a, 0) == NULL);
    /* removal needs the owner */
    pos_cid_map_remove(m, a, 16, &y);
    CHECK(pos_cid_map_find(m, a, 16) == &x);
    pos_cid_map_remove(m, a, 16, &x);
    CHECK(pos_cid_map_find(m, a, 16) == NULL);
    CHECK(pos_cid_map_count(m) == 2);
    pos_cid_map_del(m);
    pos_cid_map_del(NULL);
}

/* many ids (the map grows) all found, then all removed; the bound holds */
static void test_many_and_bound(void)
{
    enum { N = 5000 };
    static uint8_t ids[N][16];
    static int owners[N];
    pos_cid_map *m = pos_cid_map_new(0), *small = pos_cid_map_new(3);
    int found = 0, gone = 0;
    for (int i = 0; i < N; i++) {
        randombytes_buf(ids[i], 16);
        CHECK(pos_cid_map_add(m, ids[i], 16, &owners[i]) == 0);
    }
    CHECK(pos_cid_map_count(m) == N);
    for (int i = 0; i < N; i++)
        found += pos_cid_map_find(m, ids[i], 16) == &owners[i];
    CHECK(found == N);
    for (int i = 0; i < N; i += 2)
        pos_cid_map_remove(m, ids[i], 16, &owners[i]);
    for (int i = 0; i < N; i++)
        gone += pos_cid_map_find(m, ids[i], 16) == (i % 2 ? &owners[i] : NULL);
    CHECK(gone == N);
    CHECK(pos_cid_map_count(m) == N / 2);
    pos_cid_map_del(m);

    for (int i = 0; i < 3; i++)
        CHECK(pos_cid_map_add(small, ids[i], 16, &owners[i]) == 0);
    CHECK(pos_cid_map_add(small, ids[3], 16, &owners[3]) == -1);
    CHECK(pos_cid_map_find(small, ids[3], 16) == NULL);
    pos_cid_map_remove(small, ids[0], 16, &owners[0]);
    CHECK(pos_cid_map_add(small, ids[3], 16, &owners[3]) == 0);
    CHECK(pos_cid_map_count(small) == 3);
    pos_cid_map_del(small);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    test_basic();
    test_many_and_bound();
    return check_finish("cid-map");
}
