/*
 * libFuzzer target for the file-transfer protocol (client-lib/cli/transfer.c):
 * the input is what a malicious peer writes on the stream, fed to a receiver
 * (writing into a private temporary directory, emptied after each input) and
 * to a sender that has just offered a small file (and then sends its START,
 * DATA and END when the input accepts it). Neither may crash, leak,
 * write outside the directory, or produce output larger than its buffer.
 * The input is also a candidate file name (pos_xfer_name_ok, which must
 * agree with pos_xfer_text_clean: a cleaned accepted name is unchanged) and
 * a peer's text to clean for a terminal (no control byte may survive).
 * transfer*.c are compiled into the target for coverage
 * feedback.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transfer.h"
#include "transfer_files.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64] = "/tmp/pos-fuzz-transfer-XXXXXX";
static char file[128];

static void empty_dir(void);

static void cleanup(void)
{
    empty_dir();
    rmdir(dir);
    unlink(file);
}

static void setup(void)
{
    if (mkdtemp(dir) == NULL)
        abort();
    snprintf(file, sizeof file, "%s-src.bin", dir);
    FILE *f = fopen(file, "wb");
    if (f == NULL)
        abort();
    fputs("0123456789abcdef", f);
    fclose(f);
    atexit(cleanup);
}

static void empty_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            unlinkat(dirfd(d), e->d_name, 0);
    closedir(d);
}

static void drain_receiver(pos_xfer_receiver *r)
{
    uint8_t out[64];
    for (int i = 0; i < 16; i++)
        if (pos_xfer_receiver_output(r, out, sizeof out) <= 0)
            break;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (file[0] == 0)
        setup();
    int err;
    if (size <= POS_XFER_MAX_NAME) {
        char text[POS_XFER_MAX_NAME + 1];
        memcpy(text, data, size);
        text[size] = 0;
        int ok = pos_xfer_name_ok(text, size);
        pos_xfer_text_clean(text);
        if (ok && memcmp(text, data, size) != 0)
            abort(); /* an accepted name needs no cleaning */
        for (size_t i = 0; text[i]; i++)
            if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
                abort();
    }
    pos_xfer_receiver *r = pos_xfer_receiver_new(dir, 1 << 20, &err);
    if (r == NULL)
        abort();
    pos_xfer_receiver_set_sender(r, "fuzz-peer");
    size_t half = size / 2;
    pos_xfer_receiver_input(r, data, half);
    drain_receiver(r);
    pos_xfer_receiver_input(r, data + half, size - half);
    drain_receiver(r);
    pos_xfer_receiver_del(r);
    empty_dir();

    pos_xfer_sender *s = pos_xfer_sender_new(file, 1, &err);
    if (s == NULL)
        abort();
    uint8_t out[256];
    if (pos_xfer_sender_output(s, out, sizeof out) <= 0) /* the OFFER */
        abort();
    pos_xfer_sender_input(s, data, size);
    for (int i = 0; i < 4; i++) {
        int n = pos_xfer_sender_output(s, out, sizeof out);
        if (n > (int)sizeof out)
            abort();
        if (n <= 0)
            break;
    }
    pos_xfer_sender_del(s);
    return 0;
}
