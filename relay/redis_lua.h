/*
 * The prelude of the services' Lua scripts (auth.c, budget.c): time from
 * Redis, in milliseconds, so that relays with skewed clocks agree.
 */
#ifndef POS_RELAY_REDIS_LUA_H
#define POS_RELAY_REDIS_LUA_H

#define LUA_NOW                                                                                    \
    "local tm = redis.call('TIME')\n"                                                              \
    "local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)\n"

#endif
