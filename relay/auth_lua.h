/*
 * The Lua scripts of the token checks (auth.c, the only includer): the
 * per-address and per-token connection buckets, admission against a
 * token's connection cap, and the refresh of this relay's members of a
 * token's connection set. Time comes from Redis (redis_lua.h), so relays
 * with skewed clocks agree. Key layout: docs/redis-layout.md.
 */
#ifndef POS_RELAY_AUTH_LUA_H
#define POS_RELAY_AUTH_LUA_H

#include "redis_lua.h"

/* Token bucket in milli-tokens; a key that does not exist is a full bucket. */
#define LUA_BUCKET                                                                                 \
    "local function bucket(key, rate, burst, now)\n"                                               \
    "  if rate <= 0 then return true end\n"                                                        \
    "  local cap = burst * 1000\n"                                                                 \
    "  local b = redis.call('HMGET', key, 't', 'ts')\n"                                            \
    "  local t, ts = tonumber(b[1]), tonumber(b[2])\n"                                             \
    "  if t == nil or ts == nil then t = cap; ts = now end\n"                                      \
    "  if now > ts then t = math.min(cap, t + (now - ts) * rate) end\n"                            \
    "  local ok = t >= 1000\n"                                                                     \
    "  if ok then t = t - 1000 end\n"                                                              \
    "  redis.call('HSET', key, 't', math.floor(t), 'ts', now)\n"                                   \
    "  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)\n"                                 \
    "  return ok\n"                                                                                \
    "end\n"

/* KEYS[1] bucket. ARGV rate/s, burst. Returns 1 allowed, 0 limited. */
static const char lua_rate[] = LUA_NOW LUA_BUCKET
    "if bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now) then return 1 end\n"
    "return 0\n";

/*
 * KEYS[1] token bucket, KEYS[2] token connection set. ARGV rate/s, burst,
 * max_conns (0 = no cap), member, ttl ms. Returns 1 admitted, -1 rate
 * limited, -2 too many connections.
 */
static const char lua_admit[] = LUA_NOW LUA_BUCKET
    "local max = tonumber(ARGV[3])\n"
    "if max > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)\n"
    "  if redis.call('ZCARD', KEYS[2]) >= max then return -2 end\n"
    "end\n"
    "if not bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), now) then return -1 end\n"
    "if max > 0 then\n"
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[4])\n"
    "  if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[5]) then\n"
    "    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))\n"
    "  end\n"
    "end\n"
    "return 1\n";

/*
 * KEYS[1] connection set. ARGV ttl ms, members... Pushes their expiry
 * forward; the set's own TTL only grows (parked members live longer).
 */
static const char lua_refresh_conns[] =
    LUA_NOW "local ttl = tonumber(ARGV[1])\n"
            "local exp = now + ttl\n"
            "for i = 2, #ARGV do redis.call('ZADD', KEYS[1], exp, ARGV[i]) end\n"
            "if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end\n"
            "return 1\n";

#endif
