/*
 * DNS message codec for mDNS (RFC 1035 wire format, RFC 6762 bits). Sans-I/O.
 *
 * Reading goes through a bounded cursor: a message is parsed one question or
 * record at a time by struct dns_reader, which never reads outside the
 * buffer it was given. Names are decompressed into their canonical wire
 * form (length-prefixed labels, no pointers) so that they and the rdata
 * that holds names (PTR, SRV) compare bytewise. Rejected: compression
 * pointers that do not point strictly backwards (loops), more than
 * DNS_MAX_JUMPS pointers in one name, labels over 63 bytes, names over 255
 * bytes, label types 0x40/0x80, truncated records, and header counts that
 * cannot fit in the bytes present.
 *
 * Writing goes through struct dns_writer, which compresses names against
 * those already written and flags overflow instead of writing past |cap|.
 */
#ifndef POS_MDNS_DNS_H
#define POS_MDNS_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_MAX_NAME 255
#define DNS_MAX_LABEL 63
#define DNS_MAX_JUMPS 16
#define DNS_MAX_RDATA 9000 /* a whole packet (RFC 6762 §17); longer rdata: rr.oversized */
#define DNS_MAX_PACKET 9000

#define DNS_TYPE_A 1
#define DNS_TYPE_PTR 12
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28
#define DNS_TYPE_SRV 33
#define DNS_TYPE_NSEC 47
#define DNS_TYPE_ANY 255
#define DNS_CLASS_IN 1
#define DNS_CLASS_TOP_BIT 0x8000 /* QU in a question, cache-flush in a record */

#define DNS_FLAG_QR 0x8000
#define DNS_FLAG_AA 0x0400
#define DNS_FLAG_TC 0x0200

/* Codec errors (internal; mapped to POS_P2P_ERR_MDNS_* at the API). */
#define DNS_ERR_TRUNCATED -1 /* the record runs past the end of the packet */
#define DNS_ERR_NAME -2      /* bad label, loop, too many pointers, too long */
#define DNS_ERR_COUNTS -3    /* header counts exceed what the packet can hold */
#define DNS_ERR_RDATA -4     /* rdata inconsistent with its type */
#define DNS_ERR_END -5       /* no more entries (not an error) */

/*
 * The codec's structs are values: callers keep them on the stack or inside
 * their own records (a cache entry holds a dns_name), so they are defined
 * here rather than behind pointers.
 */

/* A name in canonical wire form: labels with length prefixes, ending in 0. */
struct dns_name {
    uint16_t len; /* bytes used in b, including the final 0 */
    uint8_t b[DNS_MAX_NAME + 1];
};

struct dns_header {
    uint16_t id, flags, qd, an, ns, ar;
};

struct dns_question {
    struct dns_name name;
    uint16_t type;
    uint16_t qclass; /* without the QU bit */
    bool unicast;    /* QU bit */
};

enum dns_section { DNS_SEC_QUESTION, DNS_SEC_ANSWER, DNS_SEC_AUTHORITY, DNS_SEC_ADDITIONAL };

struct dns_rr {
    struct dns_name name;
    uint16_t type;
    uint16_t rclass;  /* without the cache-flush bit */
    bool cache_flush; /* top bit of the class */
    uint32_t ttl;
    enum dns_section section;
    bool oversized; /* rdata longer than DNS_MAX_RDATA: rdata not kept */
    uint16_t rdlen;
    /* rdata, with the names of PTR and SRV decompressed (canonical form) */
    uint8_t rdata[DNS_MAX_RDATA];
};

struct dns_reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    struct dns_header h;
    unsigned q_left, rr_left[3]; /* answers, authority, additional */
};

/*
 * dns_reader_init checks the header of |buf| (|len| bytes) and prepares to
 * read its entries. Returns 0, DNS_ERR_TRUNCATED (shorter than a header) or
 * DNS_ERR_COUNTS.
 */
int dns_reader_init(struct dns_reader *r, const uint8_t *buf, size_t len);

/* dns_read_question reads the next question. Returns 0, DNS_ERR_END or an error. */
int dns_read_question(struct dns_reader *r, struct dns_question *q);

/*
 * dns_read_rr reads the next record (call after all questions were read).
 * Returns 0, DNS_ERR_END when all sections are done, or an error.
 */
int dns_read_rr(struct dns_reader *r, struct dns_rr *rr);

/*
 * dns_read_name reads a possibly compressed name at |*pos| of |buf| and
 * advances |*pos| past it. Returns 0 or DNS_ERR_NAME / DNS_ERR_TRUNCATED.
 */
int dns_read_name(const uint8_t *buf, size_t len, size_t *pos, struct dns_name *out);

/* ---- names ---- */

/*
 * dns_name_from_labels builds a name from |n| labels (each 1..63 bytes).
 * Returns 0 or DNS_ERR_NAME.
 */
int dns_name_from_labels(struct dns_name *out, const char *const *labels, size_t n);

/*
 * dns_name_from_text builds a name from dotted text ("_sd._udp.local");
 * dots cannot be escaped. Returns 0 or DNS_ERR_NAME.
 */
int dns_name_from_text(struct dns_name *out, const char *text);

/*
 * dns_name_prepend puts one label (|len| bytes, may hold any byte) in front
 * of |base|. Returns 0 or DNS_ERR_NAME.
 */
int dns_name_prepend(struct dns_name *out, const char *label, size_t len,
                     const struct dns_name *base);

/* dns_name_equal compares names, ASCII case-insensitively. */
bool dns_name_equal(const struct dns_name *a, const struct dns_name *b);

/*
 * dns_name_first_label copies the first label of |n| into |out| (NUL
 * terminated, |cap| >= 64). Returns the label length, or -1.
 */
int dns_name_first_label(const struct dns_name *n, char *out, size_t cap);

/* dns_name_parent: |n| without its first label, in |out|. Returns 0 or -1. */
int dns_name_parent(const struct dns_name *n, struct dns_name *out);

/* dns_name_to_text writes the dotted text form into |out| (truncated to |cap|). */
void dns_name_to_text(const struct dns_name *n, char *out, size_t cap);

/* ---- writing ---- */

#define DNS_COMPRESS_SLOTS 48

struct dns_writer {
    uint8_t *buf;
    size_t cap;
    size_t len;
    bool overflow;
    unsigned n_slots;
    struct {
        uint16_t offset;
        uint16_t len;
        uint8_t suffix[DNS_MAX_NAME + 1];
    } slots[DNS_COMPRESS_SLOTS];
};

/* dns_writer_init starts a message with a zeroed header in |buf|. */
void dns_writer_init(struct dns_writer *w, uint8_t *buf, size_t cap);

/* dns_write_header rewrites the 12-byte header at the start of the buffer. */
void dns_write_header(struct dns_writer *w, const struct dns_header *h);

void dns_write_name(struct dns_writer *w, const struct dns_name *n);
void dns_write_question(struct dns_writer *w, const struct dns_name *n, uint16_t type,
                        bool unicast);

/*
 * dns_write_rr writes one record. |rdata| is in canonical form; the names
 * inside PTR and SRV rdata are compressed on the way out.
 */
void dns_write_rr(struct dns_writer *w, const struct dns_name *name, uint16_t type,
                  bool cache_flush, uint32_t ttl, const uint8_t *rdata, uint16_t rdlen);

/* dns_writer_mark / dns_writer_rewind undo a record that did not fit. */
struct dns_writer_mark {
    size_t len;
    unsigned n_slots;
};
struct dns_writer_mark dns_writer_mark(const struct dns_writer *w);
void dns_writer_rewind(struct dns_writer *w, struct dns_writer_mark m);

#endif
