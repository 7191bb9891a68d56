/*
 * The summary of `pos-p2p send --json` (send_report.c): one JSON object on
 * one line at the end of the command, saying which path carried the session
 * (relayed, direct, or relayed then direct), how soon it went direct, how
 * many bytes each path carried, and each file's fate. The send loop feeds it
 * the session's status as it goes; the byte split between the paths comes
 * from those samples (the session's byte counters attributed to the path it
 * was on between two samples). Fields: docs in man/pos-p2p.1.scd.
 */
#ifndef POS_P2P_CLI_SEND_REPORT_H
#define POS_P2P_CLI_SEND_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "pos/p2p.h"

typedef struct send_report send_report;

/* send_report_new: a report with room for |n_files| files; NULL when out of memory. */
send_report *send_report_new(int n_files);

/* send_report_del frees |r| (NULL is fine). */
void send_report_del(send_report *r);

/*
 * send_report_sample: the session's status |st| at |now_ms|
 * (pos_p2p_now_ms). The bytes the session moved since the previous sample
 * are counted for the path of that sample; the first sample is the start of
 * the session, the first direct sample after a relayed one its upgrade.
 */
void send_report_sample(send_report *r, const pos_p2p_session_status *st, int64_t now_ms);

/* send_report_file: file |name| (copied) of |size| bytes was delivered intact (|ok|) or not. */
/*
 * send_report_path: the library's own account of the session's paths
 * (pos_p2p_session_get_path): once given, path, upgraded_after_ms,
 * bytes_relayed and bytes_direct come from the latest of these instead of
 * the samples. No errors.
 */
void send_report_path(send_report *r, const pos_p2p_path_info *pi);

void send_report_file(send_report *r, const char *name, uint64_t size, int ok);

/*
 * send_report_print writes the object and a newline to |out|: |bytes| file
 * bytes sent in |seconds|, |ok| when every file arrived. Returns 0, or -1
 * when it could not be written (out of memory, output error).
 */
int send_report_print(const send_report *r, FILE *out, uint64_t bytes, double seconds, int ok);

#endif
