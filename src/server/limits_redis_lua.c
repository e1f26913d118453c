/*
 * limits_redis_lua.c - the three Lua scripts of the Redis rate limiter
 * (limits_redis.h): admit, update (a request's end, the holds' renewal) and
 * usage (GET /v1/usage: a read that counts and deletes nothing). Redis runs
 * a script atomically: the check of every rule of a request and its
 * counting are one step for all instances, as the shared-memory limiter's
 * lock makes them one step for one server's workers. The semantics are
 * that limiter's (ratelimit.h), slot for slot.
 *
 * One hash per limit key (REDIS_PREFIX + "ip:..." or "tok:..."), fields:
 *   r<second>   requests admitted in that second        (the minute: 60 slots)
 *   t<second>   tokens counted in that second           (the minute)
 *   d<quarter>  tokens counted in that quarter hour     (the day: 96 slots)
 *   h<holder>   "<count>:<expiry ms>": streams places held by one worker
 *               connection (holder = worker id "." connection number)
 * Slots that left their window and holds past their expiry are deleted by
 * the next admit that reads the hash (usage skips them, deleting nothing), and the hash's
 * TTL is the moment the last thing in it stops counting: an idle key expires by itself.
 *
 * Time: Redis's own clock (TIME), not the caller's. The instances' clocks
 * differ; a window kept by several clocks would be as long as their skew
 * allows (a server 5 s ahead frees slots 5 s early for everybody). With one
 * clock every instance sees the same window. ARGV[1] can carry a time for
 * the unit tests (tests/unit/test_limits_redis.c); the server sends "".
 *
 * Held places: an instance that dies (kill -9, a lost host) never sends its
 * done. Each worker connection keeps its own hold field with an expiry (the
 * lease, LEASE_MS in limits_redis.c) that it renews while alive, so a dead
 * one's places stop counting when its lease runs out, with nothing else to
 * clean up. One field per holder (not a sorted set of every single hold)
 * keeps the renewal to one write per held key, whatever the streams.
 */
#include "limits_redis.h"

/* Shared head: the clock and the hash scan. */
#define LUA_HEAD                                                                         \
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"             \
    "local now = tonumber(ARGV[1])\n"                                                    \
    "if not now then\n"                                                                  \
    "  local t = redis.call('TIME')\n"                                                   \
    "  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"                \
    "end\n"                                                                              \
    "local sec = math.floor(now / 1000)\n"                                               \
    "local quarter = math.floor(now / 900000)\n"

/*
 * admit: KEYS = the request's hashes; ARGV = now, holder field, lease ms,
 * then rpm, tpm, tpd, streams per key (0: none).
 * Allowed: {1, held_1, ...} (held_i 1 when key i's place was taken), each
 * key counts one request. Refused: {0, retry_after_s, rule index (from 0),
 * limit, value}; nothing is counted.
 */
const char srv_redis_admit_lua[] = LUA_HEAD
    "local holder, lease = ARGV[2], tonumber(ARGV[3])\n"
    /* one key's live contents; stale fields deleted */
    "local function scan(key)\n"
    "  local s = {req = {}, tok = {}, day = {}, rt = 0, tt = 0, dt = 0,\n"
    "             held = 0, own = 0, last = 0}\n"
    "  local old = {}\n"
    "  local flat = redis.call('HGETALL', key)\n"
    "  for j = 1, #flat, 2 do\n"
    "    local f, v = flat[j], flat[j + 1]\n"
    "    local kind = string.sub(f, 1, 1)\n"
    "    local keep = false\n"
    "    if kind == 'h' then\n"
    "      local c, e = string.match(v, '^(%d+):(%d+)$')\n"
    "      c, e = tonumber(c), tonumber(e)\n"
    "      if c and e > now then\n"
    "        keep = true\n"
    "        s.held = s.held + c\n"
    "        if f == holder then s.own = c end\n"
    "        if e > s.last then s.last = e end\n"
    "      end\n"
    "    else\n"
    "      local idx, n = tonumber(string.sub(f, 2)), tonumber(v)\n"
    "      if idx and n then\n"
    "        local list, width, slots = nil, 1000, 60\n"
    "        if kind == 'r' then list = s.req\n"
    "        elseif kind == 't' then list = s.tok\n"
    "        elseif kind == 'd' then list, width, slots = s.day, 900000, 96 end\n"
    "        local cur = (kind == 'd') and quarter or sec\n"
    "        if list and idx > cur - slots then\n"
    "          keep = true\n"
    "          list[#list + 1] = {idx, n}\n"
    "          if kind == 'r' then s.rt = s.rt + n\n"
    "          elseif kind == 't' then s.tt = s.tt + n\n"
    "          else s.dt = s.dt + n end\n"
    "          local leaves = (idx + slots) * width\n"
    "          if leaves > s.last then s.last = leaves end\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if not keep then old[#old + 1] = f end\n"
    "  end\n"
    "  if #old > 0 then redis.call('HDEL', key, unpack(old)) end\n"
    "  return s\n"
    "end\n"
    /* ms until the window holds less than limit: oldest slots leave first */
    "local function wait(list, total, limit, slots, width)\n"
    "  table.sort(list, function(a, b) return a[1] < b[1] end)\n"
    "  local left = total\n"
    "  for _, s in ipairs(list) do\n"
    "    left = left - s[2]\n"
    "    if left < limit then return (s[1] + slots) * width - now end\n"
    "  end\n"
    "  return width\n"
    "end\n"
    "local best = nil\n"
    "local function refuse(i, limit, value, ms)\n"
    "  local s = math.floor((ms + 999) / 1000)\n"
    "  if s < 1 then s = 1 end\n"
    "  if not best or s > best[1] then best = {s, i - 1, limit, value} end\n"
    "end\n"
    "local state = {}\n"
    "for i, key in ipairs(KEYS) do\n"
    "  local b = 3 + (i - 1) * 4\n"
    "  local rpm, tpm = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])\n"
    "  local tpd, streams = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])\n"
    "  local s = scan(key)\n"
    "  state[i] = s\n"
    "  if rpm > 0 and s.rt >= rpm then\n"
    "    refuse(i, 'rpm', rpm, wait(s.req, s.rt, rpm, 60, 1000)) end\n"
    "  if tpm > 0 and s.tt >= tpm then\n"
    "    refuse(i, 'tpm', tpm, wait(s.tok, s.tt, tpm, 60, 1000)) end\n"
    "  if tpd > 0 and s.dt >= tpd then\n"
    "    refuse(i, 'tpd', tpd, wait(s.day, s.dt, tpd, 96, 900000)) end\n"
    "  if streams > 0 and s.held >= streams then\n"
    "    refuse(i, 'streams', streams, 1000) end\n"
    "end\n"
    "if best then return {0, best[1], best[2], best[3], best[4]} end\n"
    "local out = {1}\n"
    "for i, key in ipairs(KEYS) do\n"
    "  local s = state[i]\n"
    "  redis.call('HINCRBY', key, 'r' .. sec, 1)\n"
    "  local last = math.max(s.last, (sec + 60) * 1000)\n"
    "  out[i + 1] = 0\n"
    "  if tonumber(ARGV[3 + (i - 1) * 4 + 4]) > 0 then\n"
    "    redis.call('HSET', key, holder, (s.own + 1) .. ':' .. (now + lease))\n"
    "    last = math.max(last, now + lease)\n"
    "    out[i + 1] = 1\n"
    "  end\n"
    "  redis.call('PEXPIRE', key, last - now)\n"
    "end\n"
    "return out\n";

/*
 * update: the end of requests and the renewal of holds. KEYS = hashes;
 * ARGV = now, lease ms, tokens, then per key: add tokens (1/0), holder
 * field ("" none), hold op, count. Hold ops:
 *   dec    one place given back (the field deleted at 0, or when count is
 *          0: its holder has nothing in flight there any more)
 *   set    the field is count places (0: deleted), renewed
 *   keep   renewed; when Redis lost it (a restart) it is count again
 * The hash's TTL only grows here; the next admit trims it exactly.
 */
const char srv_redis_update_lua[] =
    LUA_HEAD "local lease, tokens = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
             "for i, key in ipairs(KEYS) do\n"
             "  local b = 3 + (i - 1) * 4\n"
             "  local add, field = ARGV[b + 1] == '1', ARGV[b + 2]\n"
             "  local op, count = ARGV[b + 3], tonumber(ARGV[b + 4])\n"
             "  local last = 0\n"
             "  if add and tokens > 0 then\n"
             "    redis.call('HINCRBY', key, 't' .. sec, tokens)\n"
             "    redis.call('HINCRBY', key, 'd' .. quarter, tokens)\n"
             "    last = (quarter + 96) * 900000\n"
             "  end\n"
             "  if field ~= '' then\n"
             "    local v = redis.call('HGET', key, field)\n"
             "    local c = v and tonumber(string.match(v, '^(%d+):')) or nil\n"
             "    local n = nil\n"
             "    if op == 'dec' then\n"
             "      if c then n = c - 1 end\n"
             "      if count == 0 then n = 0 end\n"
             "    elseif op == 'set' then n = count\n"
             "    elseif op == 'keep' then n = c or count end\n"
             "    if n and n > 0 then\n"
             "      redis.call('HSET', key, field, n .. ':' .. (now + lease))\n"
             "      last = math.max(last, now + lease)\n"
             "    elseif v then\n"
             "      redis.call('HDEL', key, field)\n"
             "    end\n"
             "  end\n"
             "  if last > 0 then\n"
             "    local ttl = redis.call('PTTL', key)\n"
             "    if ttl == -1 or (ttl >= 0 and ttl < last - now) then\n"
             "      redis.call('PEXPIRE', key, last - now)\n"
             "    end\n"
             "  end\n"
             "end\n"
             "return 1\n";

/*
 * usage: KEYS[1] = one hash; ARGV = now. {requests in the minute, tokens in
 * the minute, tokens in the day, places held}: the fields still in their
 * window, the holds not yet expired, as admit's scan counts them. Only
 * reads (a report must not change what it reports on; stale fields are
 * left to the next admit and the hash's TTL).
 */
const char srv_redis_usage_lua[] =
    LUA_HEAD "local rt, tt, dt, held = 0, 0, 0, 0\n"
             "local flat = redis.call('HGETALL', KEYS[1])\n"
             "for j = 1, #flat, 2 do\n"
             "  local f, v = flat[j], flat[j + 1]\n"
             "  local kind = string.sub(f, 1, 1)\n"
             "  if kind == 'h' then\n"
             "    local c, e = string.match(v, '^(%d+):(%d+)$')\n"
             "    c, e = tonumber(c), tonumber(e)\n"
             "    if c and e > now then held = held + c end\n"
             "  else\n"
             "    local idx, n = tonumber(string.sub(f, 2)), tonumber(v)\n"
             "    if idx and n then\n"
             "      if kind == 'r' and idx > sec - 60 then rt = rt + n\n"
             "      elseif kind == 't' and idx > sec - 60 then tt = tt + n\n"
             "      elseif kind == 'd' and idx > quarter - 96 then dt = dt + n end\n"
             "    end\n"
             "  end\n"
             "end\n"
             "return {rt, tt, dt, held}\n";
