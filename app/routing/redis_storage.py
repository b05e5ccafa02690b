"""Redis storage: every worker and replica shares one quota. Each operation is one Lua script (one
round trip, atomic); keys start with "{namespace}:" so deployments can share a server, and carry the
hash tag "{quota}" so every key a script touches lives in one Redis Cluster slot.

Per slot (one key of one model): `log:{slot}` is a sorted set of reservations ("id|tokens" scored
by time), `win:{slot}` each window's cursor and token sum, `slot:{slot}` its rest. Per model:
`model:{name}` cooldown, breaker mirror, trial lease, failing flag and last error; `used:{name}`
each of its slots' last use, and `lru:{name}` the same slots indexed by last use (see _RESERVE), so
that a reservation looks at the least recently used few instead of ranking them all. Per key value:
`key:{id}` its rest and trial lease. Per client: `clog:{name}` and `cwin:{name}`, its windows as a
slot's. Per UTC day: `usage:{day}` each client's requests and tokens per model. pybreaker keeps its own
`{ns}:breaker:{name}:*` (single-key commands only, so on a cluster they may live anywhere).

RedisClusterStorage runs the same scripts on a Redis Cluster: with every quota key in the slot of
"{quota}", one node carries a proxy's quota and each script runs there whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

import redis
from pybreaker import STATE_CLOSED, CircuitBreakerStorage, CircuitRedisStorage
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.config import CLUSTER_SCHEMES
from app.errors import ServiceUnavailable
from app.routing.storage import (
    NO_REST,
    ClientPlan,
    Pick,
    Pool,
    Refusal,
    Rest,
    Settlement,
    SlotPlan,
    SlotState,
    SpanUsage,
    Storage,
    UsageRow,
)

log = logging.getLogger("ai_proxy.routing")

T = TypeVar("T")
USAGE_FIELDS = ("r", "p", "c")  # requests, prompt tokens, completion tokens
KEY_TTL_MS = 2 * 86400 * 1000  # longer than any window; idle models' keys expire (rests: longer)
MAX_CONNECTIONS = 64  # per process; a reservation holds one for a single round trip
POOL_WAIT_SECONDS = 1.0  # the longest a request waits for a free connection
# What a client raises when storage fails: redis-py's cluster client also raises errors (no node
# reachable, a slot no node serves) outside RedisError.
STORAGE_ERRORS = (RedisError, RedisClusterException)

# Shared by the scripts that read windows. A window is brought up to its floor by subtracting the
# tokens of entries that left it; `w` is the window hash as a table, written back by `save`.
_PRELUDE = """
local function fmt(x) return string.format('%d', x) end
-- Whatever a member holds (older versions wrote negative counts), it reads as a count >= 0.
local function tokens_of(member)
  local n = tonumber(string.match(member, '|([^|]*)$') or '')
  if n == nil or n ~= n or n < 0 then return 0 end
  return n
end

local function load(wkey)
  local flat = redis.call('HGETALL', wkey)
  local w = {}
  for i = 1, #flat, 2 do w[flat[i]] = flat[i + 1] end
  return w
end

local function advance(lkey, w, s)
  s.cur = tonumber(w['c' .. s.id]) or 0
  s.sum = tonumber(w['s' .. s.id]) or 0
  if s.sum < 0 then s.sum = 0 end
  if s.floor > s.cur then
    local gone = redis.call('ZRANGEBYSCORE', lkey, '(' .. fmt(s.cur), fmt(s.floor))
    for i = 1, #gone do s.sum = s.sum - tokens_of(gone[i]) end
    if s.sum < 0 then s.sum = 0 end -- only if the sum and the log ever disagree
    if #gone > 0 then w.changed = true end
    s.cur = s.floor
  end
  s.count = redis.call('ZCOUNT', lkey, '(' .. fmt(s.cur), '+inf')
end

local function save(lkey, wkey, spans, ttl)
  local fields, low = {}, nil
  for _, s in ipairs(spans) do
    fields[#fields + 1] = 'c' .. s.id
    fields[#fields + 1] = fmt(s.cur)
    fields[#fields + 1] = 's' .. s.id
    fields[#fields + 1] = fmt(s.sum)
    if low == nil or s.cur < low then low = s.cur end
  end
  redis.call('HSET', wkey, unpack(fields))
  redis.call('ZREMRANGEBYSCORE', lkey, '-inf', fmt(low))
  redis.call('PEXPIRE', wkey, ttl)
  redis.call('PEXPIRE', lkey, ttl)
end

local function first_after(lkey, cur, offset)
  local e = redis.call('ZRANGEBYSCORE', lkey, '(' .. fmt(cur), '+inf', 'WITHSCORES', 'LIMIT', offset, 1)
  return tonumber(e[2])
end
"""

# KEYS: the first candidate's model hash (it routes the call in a cluster; every key the script
# builds from the prefix shares its hash slot). ARGV: now, tokens, member, lease, ttl, key prefix,
# the client's name ("" for none) and span count, per client span: id, floor, length, reset,
# requests, tokens; then per pool (one model's slots) three: the model name; "<priority> <slot count>
# <fingerprint> <tried flags>" ("0"/"1" per slot, "-" for none) followed by "|<id> <floor> <length>
# <reset> <requests> <tokens>" per window (few arguments: a client packs each one at a cost); and
# its slot ids then key ids, joined by "\n" ("" when the caller believes the pool indexed).
#
# Each model's `lru:{name}` sorted set indexes its slots by last use: member "<position>\n<key
# id>\n<slot id>" (position zero-padded, so equal last uses rank by position), score the last use,
# plus a marker "=<fingerprint>" naming the pool it was built for; it is built again from
# `used:{name}` when the marker is another's (first use, expiry, a changed key list), for which the
# ids are needed: without them the script changes nothing and returns {-1}, to be called again with
# them. The script merges the pools' indexes best first (priority, last use, position) and stops at
# the first slot that can serve; a model that cannot serve at all (breaker, cooldown) is left at
# once. A slot found resting on its own is parked until its rest ends (scored PARKED + that end,
# after every live slot; the marker's score is minus the earliest such end, -inf for none). Only
# when none can serve is every slot checked, for the refusals.
# Returns {chosen (1-based, 0 = none), trial, failing, hint limit, remaining, wait, key trial}
# followed, when none was chosen, by {candidate, code, wait, detail} per refused candidate, where
# candidate 0 is the client (its window refused; then nothing else was checked).
_RESERVE = """
local now, tokens, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local lease, ttl, prefix = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local models, keys = {}, {}  -- hashes read once, however many slots share them
local runs, total = {}, 0  -- one run per pool; its slots are candidates offset + 1 .. offset + n
local BATCH = 16  -- index entries read at a time once the first slot of a pool cannot serve
local PARKED = 4503599627370496  -- 2^52: a parked slot's score is this plus its rest's end

-- The client: name ("" for none), span count, per span: id, floor, length, reset, requests, tokens.
local client = nil
local a = 9 + 6 * tonumber(ARGV[8])
if ARGV[7] ~= '' then
  client = {lkey = prefix .. ':clog:' .. ARGV[7], wkey = prefix .. ':cwin:' .. ARGV[7], spans = {}}
end
while a <= #ARGV do
  local prio, n, fp, tried, spans = string.match(ARGV[a + 1], '^(%S+) (%S+) (%S+) ([^|%s]+)(.*)$')
  local run = {name = ARGV[a], prio = tonumber(prio), n = tonumber(n), marker = '=' .. fp, spans = spans,
               tried = tried, ids = ARGV[a + 2]}
  a = a + 3
  run.offset, total = total, total + run.n
  run.ikey, run.ukey = prefix .. ':lru:' .. run.name, prefix .. ':used:' .. run.name
  runs[#runs + 1] = run
end

local function lines(text)
  local out = {}
  for line in string.gmatch(text, '[^\\n]+') do out[#out + 1] = line end
  return out
end

local function entry(position, kid, sid)
  return string.format('%06d', position) .. '\\n' .. kid .. '\\n' .. sid
end

-- An index member as {position, kid, sid, member}.
local function parse(m)
  local second = string.find(m, '\\n', 8, true)
  return {position = tonumber(string.sub(m, 1, 6)), kid = string.sub(m, 8, second - 1),
          sid = string.sub(m, second + 1), member = m}
end

local function last_use(value)  -- as `used:{name}` holds it; whatever is there reads as a time
  local at = tonumber(value) or 0
  if at ~= at or at < 0 then return 0 end
  return at
end

-- Index members back at their last use (read from `used:{name}`), a thousand per call.
local function restore(run, members, sids)
  for from = 1, #members, 1000 do
    local upto = math.min(from + 999, #members)
    local used = redis.call('HMGET', run.ukey, unpack(sids, from, upto))
    local args = {}
    for k = from, upto do
      args[#args + 1] = fmt(last_use(used[k - from + 1]))
      args[#args + 1] = members[k]
    end
    redis.call('ZADD', run.ikey, unpack(args))
  end
end

-- Parked slots whose rest is over go back to their last use; the marker's score becomes minus the
-- next rest end (-inf: none parked).
local function unpark(run)
  local back = redis.call('ZRANGEBYSCORE', run.ikey, fmt(PARKED), fmt(PARKED + now))
  local sids = {}
  for k, m in ipairs(back) do sids[k] = parse(m).sid end
  restore(run, back, sids)
  local later = redis.call('ZRANGEBYSCORE', run.ikey, '(' .. fmt(PARKED + now), '+inf', 'WITHSCORES',
                           'LIMIT', 0, 1)
  run.parked = nil
  if later[2] then run.parked = tonumber(later[2]) - PARKED end
  redis.call('ZADD', run.ikey, run.parked and fmt(-run.parked) or '-inf', run.marker)
end

-- The index of a run's model for this pool: as it is when its marker is this pool's, else built
-- again from the last uses (the marker only changes here, so a stale index is always replaced).
local function open(run)
  local got = redis.call('ZRANGE', run.ikey, 0, 1, 'WITHSCORES')
  if got[1] ~= run.marker then
    if run.ids == '' then return false end
    local ids, sids, members = lines(run.ids), {}, {}
    for k = 1, run.n do
      sids[k] = ids[k]
      members[k] = entry(k, ids[run.n + k], ids[k])
    end
    redis.call('DEL', run.ikey)
    redis.call('ZADD', run.ikey, '-inf', run.marker)
    restore(run, members, sids)
    redis.call('PEXPIRE', run.ikey, ttl)
    redis.call('PEXPIRE', run.ukey, ttl)  -- the two keep one deadline
    got = redis.call('ZRANGE', run.ikey, 0, 1, 'WITHSCORES')
  end
  run.parked = nil  -- the earliest end of a parked slot's rest
  if got[2] ~= '-inf' then run.parked = -tonumber(got[2]) end
  if run.parked ~= nil and run.parked <= now then
    unpark(run)
    got = redis.call('ZRANGE', run.ikey, 0, 1, 'WITHSCORES')
  end
  run.buffer, run.at, run.rank = {got[3], got[4]}, 1, 2
  return true
end

-- Slots a walk found resting on their own leave it until their rest ends (such a rest is never
-- shortened): parked after every live slot, scored PARKED plus the rest's end.
local function park(resting)
  for _, cand in ipairs(resting) do
    local run = cand.run
    redis.call('ZADD', run.ikey, fmt(PARKED + cand.suntil), cand.member)
    if run.parked == nil or cand.suntil < run.parked then
      run.parked = cand.suntil
      redis.call('ZADD', run.ikey, fmt(-cand.suntil), run.marker)
    end
  end
end

-- The run's next slot by last use into run.head {position, kid, sid, used, member}; nil at the end.
local function step(run)
  if run.at > #run.buffer then
    run.buffer = redis.call('ZRANGE', run.ikey, run.rank, run.rank + BATCH - 1, 'WITHSCORES')
    run.at, run.rank = 1, run.rank + BATCH
  end
  local m = run.buffer[run.at]
  if m == nil then
    run.head = nil
    return
  end
  local used = tonumber(run.buffer[run.at + 1])
  if used >= PARKED then  -- the live slots are done
    run.head = nil
    return
  end
  run.head = parse(m)
  run.head.used = used
  run.at = run.at + 2
end

local function candidate(run, slot)
  if run.spec == nil then  -- the windows, read once a slot of the run is looked at
    run.spec = {}
    local field = ' ([^|%s]+)'
    for id, floor, len, reset, req, tok in string.gmatch(run.spans, '|([^|%s]+)' .. string.rep(field, 5)) do
      run.spec[#run.spec + 1] = {id, tonumber(floor), tonumber(len), tonumber(reset), tonumber(req),
                                 tonumber(tok)}
    end
  end
  return {c = run.offset + slot.position, spec = run.spec, name = run.name, sid = slot.sid, kid = slot.kid,
          run = run, member = slot.member, tried = string.sub(run.tried, slot.position, slot.position) == '1'}
end

local function wait_of(s, oldest)
  if s.reset > 0 then return s.reset - now end
  return oldest + s.len - now
end

local function freeing(lkey, s, excess)
  local e = redis.call('ZRANGEBYSCORE', lkey, '(' .. fmt(s.cur), '+inf', 'WITHSCORES')
  local t = 0
  for i = 1, #e, 2 do
    t = tonumber(e[i + 1])
    excess = excess - tokens_of(e[i])
    if excess <= 0 then break end
  end
  return t
end

local function model_of(name)
  local mkey = prefix .. ':model:' .. name
  local m = models[mkey]
  if m == nil then
    m = redis.call('HMGET', mkey, 'cool', 'why', 'brk', 'trial', 'fl')
    models[mkey] = m
  end
  return m
end

-- What keeps every slot of a model out: {wait, code, detail} each, a breaker block first.
local function model_blocks(m)
  local blocks = {}
  local brk = tonumber(m[3]) or 0
  if brk > 0 then
    local trial = tonumber(m[4]) or 0
    if brk > now then blocks[#blocks + 1] = {brk - now, 'open', ''}
    elseif trial > now then blocks[#blocks + 1] = {trial - now, 'trial', ''} end
  end
  local cool = tonumber(m[1]) or 0
  if cool > now then blocks[#blocks + 1] = {cool - now, 'cool', m[2] or ''} end
  return blocks
end

-- Everything that keeps a candidate from serving now: nil, or its refusal {c, code, wait, detail}.
local function check(cand)
  cand.mkey, cand.skey = prefix .. ':model:' .. cand.name, prefix .. ':slot:' .. cand.sid
  cand.lkey, cand.wkey = prefix .. ':log:' .. cand.sid, prefix .. ':win:' .. cand.sid
  cand.kkey = prefix .. ':key:' .. cand.kid
  local m = model_of(cand.name)
  local k = keys[cand.kkey]
  if k == nil then
    k = redis.call('HMGET', cand.kkey, 'until', 'kind', 'why', 'trial')
    keys[cand.kkey] = k
  end
  local st = redis.call('HMGET', cand.skey, 'until', 'kind', 'why')
  local blocks = model_blocks(m)
  local kuntil, ktrial = tonumber(k[1]) or 0, 0
  if kuntil > now then
    blocks[#blocks + 1] = {kuntil - now, 'key', (k[2] or '') .. '|' .. (k[3] or '')}
  elseif k[2] == 'auth' then
    ktrial = 1
    local lease_end = tonumber(k[4]) or 0
    if lease_end > now then blocks[#blocks + 1] = {lease_end - now, 'ktrial', ''} end
  end
  local suntil = tonumber(st[1]) or 0
  if suntil > now then blocks[#blocks + 1] = {suntil - now, 'slot', (st[2] or '') .. '|' .. (st[3] or '')} end
  local spans, w = {}, {}
  if #cand.spec > 0 then w = load(cand.wkey) end
  for j, p in ipairs(cand.spec) do
    local s = {id = p[1], floor = p[2], len = p[3], reset = p[4], req = p[5], tok = p[6]}
    advance(cand.lkey, w, s)
    if s.req > 0 and s.count >= s.req then
      blocks[#blocks + 1] = {wait_of(s, first_after(cand.lkey, s.cur, s.count - s.req)), 'req', s.id}
    end
    if s.tok > 0 and s.sum + tokens > s.tok then
      blocks[#blocks + 1] = {wait_of(s, freeing(cand.lkey, s, s.sum + tokens - s.tok)), 'tok', s.id}
    end
    spans[j] = s
  end
  cand.spans, cand.w, cand.brk, cand.fl, cand.ktrial = spans, w, tonumber(m[3]) or 0, m[5], ktrial
  cand.suntil = suntil
  if #blocks > 0 then
    if w.changed then save(cand.lkey, cand.wkey, spans, ttl) end
    local longest, pick = 0, blocks[1]
    for _, b in ipairs(blocks) do if b[1] > longest then longest = b[1] end end
    if pick[2] ~= 'open' and pick[2] ~= 'trial' then
      for _, b in ipairs(blocks) do if b[1] == longest then pick = b; break end end
    end
    return {cand.c, pick[2], longest, pick[3]}
  end
  if cand.tried then
    if w.changed then save(cand.lkey, cand.wkey, spans, ttl) end
    return {cand.c, 'tried', 0, ''}
  end
  return nil
end

local function before(x, y)  -- runs, by their heads: priority, then last use, then candidate number
  if x.prio ~= y.prio then return x.prio < y.prio end
  if x.head.used ~= y.head.used then return x.head.used < y.head.used end
  return x.offset + x.head.position < y.offset + y.head.position
end

for _, run in ipairs(runs) do  -- every index first: one the ids are needed for, and nothing changes
  if not open(run) then return {-1} end
end

if client ~= nil then  -- the client's own windows first: spent, and nothing is taken anywhere
  client.w = load(client.wkey)
  local longest = nil
  for j = 9, 8 + 6 * tonumber(ARGV[8]), 6 do
    local s = {id = ARGV[j], floor = tonumber(ARGV[j + 1]), len = tonumber(ARGV[j + 2]),
               reset = tonumber(ARGV[j + 3]), req = tonumber(ARGV[j + 4]), tok = tonumber(ARGV[j + 5])}
    advance(client.lkey, client.w, s)
    local block = nil
    if s.req > 0 and s.count >= s.req then
      block = {wait_of(s, first_after(client.lkey, s.cur, s.count - s.req)), 'req', s.id}
    end
    if s.tok > 0 and s.sum + tokens > s.tok then
      local tblock = {wait_of(s, freeing(client.lkey, s, s.sum + tokens - s.tok)), 'tok', s.id}
      if block == nil or tblock[1] > block[1] then block = tblock end
    end
    if block ~= nil and (longest == nil or block[1] > longest[1]) then longest = block end
    client.spans[#client.spans + 1] = s
  end
  if longest ~= nil then
    if client.w.changed then save(client.lkey, client.wkey, client.spans, ttl) end
    return {0, 0, 0, 0, 0, 0, 0, 0, longest[2], longest[1], longest[3]}
  end
end

local walking = {}  -- runs whose slots are still being looked at
for _, run in ipairs(runs) do
  step(run)
  if run.head ~= nil then walking[#walking + 1] = run end
end
local best, refusals, resting = nil, {}, {}
while best == nil and #walking > 0 do
  local i = 1
  for j = 2, #walking do if before(walking[j], walking[i]) then i = j end end
  local run = walking[i]
  if #model_blocks(model_of(run.name)) > 0 then
    table.remove(walking, i)  -- none of its slots can serve: each is refused below
  else
    local cand = candidate(run, run.head)
    local r = check(cand)
    if r == nil then
      best = cand
    else
      refusals[cand.c] = r
      if cand.suntil > now then resting[#resting + 1] = cand end
      step(run)
      if run.head == nil then table.remove(walking, i) end
    end
  end
end
park(resting)

if best == nil then  -- why each slot cannot serve; those of a model left at once, and parked ones, now
  local out = {0, 0, 0, 0, 0, 0, 0}
  for _, run in ipairs(runs) do
    local slots = nil  -- by position, read from the index when one is needed
    for position = 1, run.n do
      local r = refusals[run.offset + position]
      if r == nil then
        if slots == nil then
          slots = {}
          for _, m in ipairs(redis.call('ZRANGE', run.ikey, 1, -1)) do
            local slot = parse(m)
            slots[slot.position] = slot
          end
        end
        r = check(candidate(run, slots[position])) or {run.offset + position, 'tried', 0, ''}
      end
      for _, v in ipairs(r) do out[#out + 1] = v end
    end
  end
  return out
end

local cand = best
local hint = {0, 0, 0}
if #cand.spans > 0 then
  redis.call('ZADD', cand.lkey, fmt(now), member)
  for _, s in ipairs(cand.spans) do
    s.sum = s.sum + tokens
    s.count = s.count + 1
    if s.req > 0 then
      local remaining = math.max(s.req - s.count, 0)
      if hint[1] == 0 or remaining <= hint[2] then
        hint = {s.req, remaining, math.max(wait_of(s, first_after(cand.lkey, s.cur, 0)), 0)}
      end
    end
  end
  save(cand.lkey, cand.wkey, cand.spans, ttl)
end
if client ~= nil then
  redis.call('ZADD', client.lkey, fmt(now), member)
  for _, s in ipairs(client.spans) do s.sum = s.sum + tokens end
  save(client.lkey, client.wkey, client.spans, ttl)
end
redis.call('HSET', cand.run.ukey, cand.sid, fmt(now))
redis.call('ZADD', cand.run.ikey, fmt(now), cand.member)
redis.call('PEXPIRE', cand.run.ukey, ttl)
redis.call('PEXPIRE', cand.run.ikey, ttl)
local trial = 0
if cand.brk > 0 then
  trial = 1
  redis.call('HSET', cand.mkey, 'trial', fmt(now + lease))
  redis.call('PEXPIRE', cand.mkey, ttl)
end
if cand.ktrial == 1 then
  redis.call('HSET', cand.kkey, 'trial', fmt(now + lease))
end
local failing = 0
if cand.fl then failing = 1 end
return {cand.c, trial, failing, hint[1], hint[2], hint[3], cand.ktrial}
"""

# KEYS: per settlement its log and windows, then the day's usage hash when there is a row. ARGV:
# the settlement count, per settlement: old member, new member, token delta, span count, span ids;
# then the row's "client\nmodel", requests, prompt tokens, completion tokens and the hash's ttl.
_SETTLE = """
local a = 2
for i = 1, tonumber(ARGV[1]) do
  local lkey, wkey, n = KEYS[2 * i - 1], KEYS[2 * i], tonumber(ARGV[a + 3])
  local score = redis.call('ZSCORE', lkey, ARGV[a])
  if score then
    redis.call('ZREM', lkey, ARGV[a])
    redis.call('ZADD', lkey, score, ARGV[a + 1])
    score = tonumber(score)
    for j = a + 4, a + 3 + n do
      if score > (tonumber(redis.call('HGET', wkey, 'c' .. ARGV[j])) or 0) then
        redis.call('HINCRBY', wkey, 's' .. ARGV[j], ARGV[a + 2])
      end
    end
  end
  a = a + 4 + n
end
if a <= #ARGV then
  local k, who = KEYS[#KEYS], ARGV[a]
  redis.call('HINCRBY', k, who .. '\\nr', ARGV[a + 1])
  redis.call('HINCRBY', k, who .. '\\np', ARGV[a + 2])
  redis.call('HINCRBY', k, who .. '\\nc', ARGV[a + 3])
  if redis.call('PTTL', k) < 0 then redis.call('PEXPIRE', k, ARGV[a + 4]) end
end
return 1
"""

# KEYS: model hash. ARGV: now, rest until, reason, error, failing ("1", "0" or ""), ttl.
_REPORT = """
local k = KEYS[1]
local rest = tonumber(ARGV[2])
if rest > 0 and rest > (tonumber(redis.call('HGET', k, 'cool')) or 0) then
  redis.call('HSET', k, 'cool', ARGV[2], 'why', ARGV[3])
end
if ARGV[4] ~= '' then redis.call('HSET', k, 'err', ARGV[4], 'err_at', ARGV[1]) end
if ARGV[5] == '1' then redis.call('HSET', k, 'fl', '1')
elseif ARGV[5] == '0' then redis.call('HDEL', k, 'fl') end
redis.call('PEXPIRE', k, ARGV[6])
return 1
"""

# KEYS: a slot's or a key's hash. ARGV: until, class, reason, ttl. A rest is never shortened; a new
# rest of a key ends its trial lease.
_REST = """
local k = KEYS[1]
if tonumber(ARGV[1]) > (tonumber(redis.call('HGET', k, 'until')) or 0) then
  redis.call('HSET', k, 'until', ARGV[1], 'kind', ARGV[2], 'why', ARGV[3])
  redis.call('HDEL', k, 'trial')
end
if redis.call('PTTL', k) < tonumber(ARGV[4]) then redis.call('PEXPIRE', k, ARGV[4]) end
return 1
"""

# KEYS: the first slot's model hash (it routes the call in a cluster; every key the script builds
# from the prefix shares its hash slot). ARGV: ttl, key prefix, then per slot: model name, slot id,
# key id, span count, per span: id, floor. Returns per slot {cool, why, brk, err, err_at, used,
# until, class, reason, key until, class, reason} then per span {count, tokens, oldest}: the whole
# snapshot in one round trip.
_INSPECT = """
local ttl, prefix = ARGV[1], ARGV[2]
local out = {}
local a = 3
while a <= #ARGV do
  local name, sid, kid, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  a = a + 4
  local lkey, wkey = prefix .. ':log:' .. sid, prefix .. ':win:' .. sid
  local st = redis.call('HMGET', prefix .. ':model:' .. name, 'cool', 'why', 'brk', 'err', 'err_at')
  st[#st + 1] = redis.call('HGET', prefix .. ':used:' .. name, sid)
  for _, rkey in ipairs({prefix .. ':slot:' .. sid, prefix .. ':key:' .. kid}) do
    for _, v in ipairs(redis.call('HMGET', rkey, 'until', 'kind', 'why')) do st[#st + 1] = v end
  end
  local spans, w = {}, {}
  if n > 0 then w = load(wkey) end
  for j = 1, n do
    local s = {id = ARGV[a], floor = tonumber(ARGV[a + 1])}
    a = a + 2
    advance(lkey, w, s)
    spans[j] = s
  end
  if w.changed then save(lkey, wkey, spans, ttl) end
  for _, s in ipairs(spans) do
    st[#st + 1] = s.count
    st[#st + 1] = s.sum
    st[#st + 1] = first_after(lkey, s.cur, 0) or 0
  end
  out[#out + 1] = st
end
return out
"""


class RedisStorage(Storage):
    def __init__(self, client: redis.Redis | RedisCluster, namespace: str = "ai-proxy") -> None:
        """`client` must not decode responses (pybreaker's storage needs bytes)."""
        self._redis = client
        self._ns = namespace
        self._reserve = client.register_script(_PRELUDE + _RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._report = client.register_script(_REPORT)
        self._rest = client.register_script(_REST)
        self._inspect = client.register_script(_PRELUDE + _INSPECT)
        self._prefix = f"{namespace}:{{quota}}"
        self._slot_keys: dict[str, tuple[str, str]] = {}
        self._pool_args: dict[str, str] = {}  # per pool fingerprint, see _joined
        self._indexed: set[str] = set()  # fingerprints of pools whose index the scripts have built
        self._down = False
        self._state_lock = threading.Lock()  # only taken when Redis fails or recovers
        # Connections for the scripts (see _script): at most MAX_CONNECTIONS, however many threads.
        self._idle: deque[redis.Connection] = deque()
        self._free = threading.BoundedSemaphore(MAX_CONNECTIONS)

    @classmethod
    def from_url(cls, url: str, namespace: str = "ai-proxy") -> RedisStorage:
        """A client that fails fast (short timeouts, one immediate retry for a stale socket) over a
        pool where threads wait briefly for a connection instead of failing when all are busy."""
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=30,
        )
        return cls(redis.Redis(connection_pool=pool), namespace)

    def ping(self) -> None:
        """Raises one of STORAGE_ERRORS when the server does not answer."""
        self._redis.ping()

    def reserve(
        self,
        pools: Sequence[Pool],
        tried: Collection[int],
        tokens: int,
        now: int,
        rid: str,
        lease: int,
        client: ClientPlan | None = None,
    ) -> Pick:
        args: list[Any] = [now, tokens, f"{rid}|{tokens}", lease, KEY_TTL_MS, self._prefix]
        client_spans = client.spans if client is not None else ()
        args += (client.id if client_spans else "", len(client_spans))  # type: ignore[union-attr]
        for span in client_spans:
            floor, reset = span.bounds(now)
            args += (span.id, floor, span.length, reset, span.requests, span.tokens)
        offset = 0
        for pool in pools:
            size = len(pool.ids)
            flags = "".join("1" if offset + n in tried else "0" for n in range(size)) if tried else "-"
            spec = [f"{pool.model.priority} {size} {pool.fingerprint} {flags}"]
            for span in pool.model.spans:
                floor, reset = span.bounds(now)
                spec.append(f"{span.id} {floor} {span.length} {reset} {span.requests} {span.tokens}")
            args += (pool.model.name, "|".join(spec), "")
            offset += size
        first_model = [self._model_key(pools[0].model.name if pools else "")]
        start = len(args) - 3 * len(pools) + 2  # each pool's ids: args[start + 3 * n]
        unknown = [n for n, pool in enumerate(pools) if pool.fingerprint not in self._indexed]
        for n in unknown:  # the ids of pools not seen indexed yet
            args[start + 3 * n] = self._joined(pools[n])
        out = self._run(self._script, self._reserve, first_model, args)
        if out[0] == -1:  # an index is gone (expired, or built for other keys): once more with all ids
            unknown = list(range(len(pools)))
            for n in unknown:
                args[start + 3 * n] = self._joined(pools[n])
            out = self._run(self._script, self._reserve, first_model, args)
        self._indexed.update(pools[n].fingerprint for n in unknown)
        if out[0]:
            hint = (out[3], out[4], out[5]) if out[3] else None
            return Pick(
                index=out[0] - 1, trial=bool(out[1]), failing=bool(out[2]), hint=hint, key_trial=bool(out[6])
            )
        refusals = [
            Refusal(out[i] - 1, out[i + 1].decode(), out[i + 2], out[i + 3].decode())
            for i in range(7, len(out), 4)
        ]
        if refusals and refusals[0].index < 0:
            return Pick(client_refusal=refusals[0])
        return Pick(refusals=refusals)

    def settle(
        self, settlements: Sequence[Settlement], usage: UsageRow | None = None, keep_days: int = 0
    ) -> None:
        keys: list[str] = []
        args: list[Any] = [len(settlements)]
        for plan, rid, reserved, used in settlements:
            keys += self._client_keys(plan) if isinstance(plan, ClientPlan) else self._window_keys(plan)
            used = max(used, 0)
            args += (f"{rid}|{reserved}", f"{rid}|{used}", used - reserved, len(plan.spans))
            args += (span.id for span in plan.spans)
        if usage is not None:
            keys.append(self._usage_key(usage.day))
            ttl = (max(keep_days, 1) + 1) * 86400 * 1000  # a day's hash outlives the days it is shown
            args += (f"{usage.client}\n{usage.model}", usage.requests, usage.prompt_tokens)
            args += (usage.completion_tokens, ttl)
        if keys:
            self._run(self._script, self._settle, keys, args)

    def usage(self, days: Sequence[str]) -> list[UsageRow]:
        pipe = self._redis.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(self._usage_key(day))
        rows: dict[tuple[str, str, str], list[int]] = {}
        for day, found in zip(days, self._run(pipe.execute), strict=True):
            for field_name, value in found.items():
                who, _, what = field_name.decode().rpartition("\n")
                client, _, model = who.partition("\n")
                counts = rows.setdefault((day, client, model), [0, 0, 0])
                if what in USAGE_FIELDS:
                    counts[USAGE_FIELDS.index(what)] = int(value)
        return [UsageRow(*key, *counts) for key, counts in rows.items()]

    def _usage_key(self, day: str) -> str:
        return f"{self._prefix}:usage:{day}"

    def report(
        self,
        name: str,
        now: int,
        *,
        rest_until: int = 0,
        reason: str = "",
        error: str = "",
        failing: bool | None = None,
    ) -> None:
        flag = "" if failing is None else ("1" if failing else "0")
        args = [now, rest_until, reason, error, flag, KEY_TTL_MS]
        self._run(self._script, self._report, [self._model_key(name)], args)

    def rest(self, slot: SlotPlan, now: int, rest: Rest, *, whole_key: bool) -> None:
        key = self._key_key(slot.key) if whole_key else f"{self._prefix}:slot:{slot.id}"
        ttl = max(rest.until - now, 0) // 1000 + KEY_TTL_MS  # outlives the rest, kept for its trial
        self._run(self._script, self._rest, [key], [rest.until, rest.kind, rest.reason, ttl])

    def restore_key(self, slot: SlotPlan) -> None:
        self._run(self._redis.delete, self._key_key(slot.key))

    def set_breaker(self, name: str, open_until: int) -> None:
        key = self._model_key(name)
        pipe = self._redis.pipeline(transaction=True)
        if open_until:
            pipe.hset(key, "brk", open_until)
            pipe.hdel(key, "trial")
        else:
            pipe.hdel(key, "brk", "trial", "fl")
        pipe.pexpire(key, KEY_TTL_MS)
        self._run(pipe.execute)

    def inspect(self, slots: Sequence[SlotPlan], now: int) -> list[SlotState]:
        if not slots:
            return []
        args: list[Any] = [KEY_TTL_MS, self._prefix]
        for slot in slots:
            args += (slot.model.name, slot.id, slot.key, len(slot.spans))
            for span in slot.spans:
                args += (span.id, span.bounds(now)[0])
        rows = self._run(self._script, self._inspect, [self._model_key(slots[0].model.name)], args)
        return [_state(row) for row in rows]

    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        return self._run(
            CircuitRedisStorage, STATE_CLOSED, self._redis, namespace=f"{self._ns}:breaker:{name}"
        )

    def _model_key(self, name: str) -> str:
        return f"{self._prefix}:model:{name}"

    def _key_key(self, key_id: str) -> str:
        return f"{self._prefix}:key:{key_id}"

    def _joined(self, pool: Pool) -> str:
        """The pool's slot ids then key ids, joined by newlines, as the script takes them."""
        joined = self._pool_args.get(pool.fingerprint)
        if joined is None:
            joined = self._pool_args[pool.fingerprint] = "\n".join((*pool.ids, *pool.keys))
        return joined

    def _window_keys(self, slot: SlotPlan) -> tuple[str, str]:
        """The slot's reservation log and window sums."""
        keys = self._slot_keys.get(slot.id)
        if keys is None:
            p = self._prefix
            keys = self._slot_keys[slot.id] = (f"{p}:log:{slot.id}", f"{p}:win:{slot.id}")
        return keys

    def _client_keys(self, client: ClientPlan) -> tuple[str, str]:
        """The client's reservation log and window sums."""
        return f"{self._prefix}:clog:{client.id}", f"{self._prefix}:cwin:{client.id}"

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA over a connection of our own, the one round trip a request needs.

        Through the client, every command checks a connection out of the pool and back in (a
        queue, a probe for unread data that costs three syscalls, metrics bookkeeping): ~70 us of
        CPU even for a PING, and each syscall hands the GIL to another thread under load. A script
        always reads its whole answer, so a connection handed back is clean and none of that is
        needed: a semaphore bounds them to MAX_CONNECTIONS per process (a worker has 1,500 threads;
        Redis and hosted plans limit clients) and a deque keeps the idle ones. Like the client, a
        connection error or timeout drops the connection and the command is tried once more on a
        new one; a thread that finds none free within a second fails as the pool would."""
        if not self._free.acquire(timeout=POOL_WAIT_SECONDS):
            raise RedisConnectionError("no free Redis connection")
        conn = None
        try:
            with contextlib.suppress(IndexError):  # none idle
                conn = self._idle.pop()
            if conn is None or conn.pid != os.getpid():  # none idle, or inherited across a fork
                pool = self._redis.connection_pool
                conn = pool.connection_class(**pool.connection_kwargs)
            try:
                return _evalsha(conn, script, keys, args)
            except (RedisConnectionError, RedisTimeoutError):  # dropped: once more, reconnected
                return _evalsha(conn, script, keys, args)
        finally:
            if conn is not None:
                self._idle.append(conn)
            self._free.release()

    def _run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Fail closed while Redis is unreachable, with one warning per outage."""
        try:
            result = call(*args, **kwargs)
        except STORAGE_ERRORS as exc:
            with self._state_lock:
                first, self._down = not self._down, True
            if first:
                log.warning("quota storage unavailable, refusing requests until Redis answers: %s", exc)
            raise ServiceUnavailable("quota storage unavailable") from None
        if self._down:
            with self._state_lock:
                recovered, self._down = self._down, False
            if recovered:
                log.info("quota storage reachable again")
        return result


class RedisClusterStorage(RedisStorage):
    """RedisStorage on a Redis Cluster (`redis+cluster://` or `rediss+cluster://`, any node): the
    client learns the other nodes and sends each script to the node of its keys' slot."""

    @classmethod
    def from_url(cls, url: str, namespace: str = "ai-proxy") -> RedisClusterStorage:
        """As RedisStorage.from_url, per node; the scheme loses its "+cluster" for redis-py.
        Raises RedisClusterException when no node answers."""
        scheme, _, rest = url.partition("://")
        if scheme not in CLUSTER_SCHEMES:
            raise ValueError(f"not a cluster URL: {scheme}://")
        client = RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            connection_pool_class=redis.BlockingConnectionPool,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=1.0,
            socket_connect_timeout=1.0,
            retry=Retry(NoBackoff(), 1),  # here: how often a failed command is tried again
            health_check_interval=30,
        )
        return cls(client, namespace)

    def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA through the cluster client, which picks the node of the keys' slot, follows a
        MOVED answer after a failover or resharding, and loads the script where it is missing."""
        return script(keys, args)

    def breaker_storage(self, name: str) -> CircuitBreakerStorage:
        return self._run(
            CircuitRedisStorage,
            STATE_CLOSED,
            self._redis,
            namespace=f"{self._ns}:breaker:{name}",
            cluster_mode=True,  # its keys may sit in different slots: no WATCH/MULTI across them
        )


def _evalsha(conn: redis.Connection, script: Script, keys: list[str], args: list[Any]) -> Any:
    """The script's answer on `conn`, loaded first if the server lost it (restart, SCRIPT FLUSH).
    A connection error or timeout drops the connection (reconnected on its next use)."""
    try:
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()
        except NoScriptError:
            conn.send_command("SCRIPT", "LOAD", script.script)
            conn.read_response()
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()
    except (RedisConnectionError, RedisTimeoutError):
        conn.disconnect()
        raise


def _state(row: list[Any]) -> SlotState:
    cool, why, brk, error, error_at, used, until, kind, reason, key_until, key_kind, key_reason = row[:12]
    spans = [SpanUsage(row[i], row[i + 1], row[i + 2]) for i in range(12, len(row), 3)]
    return SlotState(
        spans=spans,
        cool_until=int(cool or 0),
        cool_reason=_text(why),
        breaker_until=int(brk or 0),
        last_used=int(used or 0),
        error=_text(error),
        error_at=int(error_at or 0),
        slot_rest=_rest(until, kind, reason),
        key_rest=_rest(key_until, key_kind, key_reason),
    )


def _text(value: bytes | None) -> str:
    return (value or b"").decode()


def _rest(until: bytes | None, kind: bytes | None, reason: bytes | None) -> Rest:
    return Rest(int(until), _text(kind), _text(reason)) if until else NO_REST
