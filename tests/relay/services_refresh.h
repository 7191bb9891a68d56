/*
 * The presence refresh's checks (services_refresh.c), run by
 * test_relay_services.c's "checks" on a live Redis.
 */
#ifndef POS_TEST_SERVICES_REFRESH_H
#define POS_TEST_SERVICES_REFRESH_H

#include "relay_config.h"
#include "services.h"

/* run_for: the test's loop for |seconds| (test_relay_services.c) */
void services_run_for(double seconds);

/*
 * test_refresh_spread: many presence keys come back within one interval, a share per tick.
 * Adds its checks to |passed| and |failed| (check.h's counters are per file).
 */
void test_refresh_spread(relay_services *s, const relay_config *cfg, int *passed, int *failed);
/* test_conn_refresh_spread: a token's connection-set members likewise. */
void test_conn_refresh_spread(relay_services *s, const relay_config *cfg, int *passed, int *failed);

#endif
