package redis

import goredis "github.com/redis/go-redis/v9"

// Every script sees the same KEYS and leading ARGV:
//
//	KEYS[1] lexical index of the namespace (ZSET, score 0, member = key)
//	KEYS[2] expiry index of the namespace (ZSET, score = expires_at µs)
//	KEYS[3] namespaces of the tenant (SET)
//	KEYS[4] the record (HASH), for per-record scripts
//	ARGV[1] clock offset in µs (tests only; 0 in production)
//	ARGV[2] record key prefix of the namespace (record key = ARGV[2]..key)
//	ARGV[3] namespace
//	ARGV[4] key (per-record scripts)
//
// All keys carry the tenant's hash tag, so they live in one cluster slot;
// the sweep touches records of the same namespace by name, which Redis
// Cluster accepts because they share that slot.
//
// Record hash fields: f fingerprint, s state (1 IN_PROGRESS, 2 COMPLETED,
// 3 RELEASED), t token, a attempts, c created_at, l lease_expires_at,
// d completed_at (0 = unset), e expires_at (all times µs since the epoch),
// r result blob, k checkpoint blob (both encoded by codec.go; Lua only
// compares them for equality).
//
// Replies of per-record scripts: {code, detail, f, s, t, a, c, l, d, e, r, k}
// with the fields of the record to answer with, or {code, detail} when
// there is none.
const prelude = `
if redis.replicate_commands then pcall(redis.replicate_commands) end
local FIELDS = {'f', 's', 't', 'a', 'c', 'l', 'd', 'e', 'r', 'k'}
local T = redis.call('TIME')
local REAL_MS = tonumber(T[1]) * 1000 + math.floor(tonumber(T[2]) / 1000)
local NOW = tonumber(T[1]) * 1000000 + tonumber(T[2]) + tonumber(ARGV[1])

local function n2s(n) return string.format('%.0f', n) end

local function load(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  if not v[8] then return nil end
  local r = {raw = v, f = v[1] or '', s = tonumber(v[2]), t = tonumber(v[3]),
    a = tonumber(v[4]), l = tonumber(v[6]), e = tonumber(v[8]), r = v[9]}
  -- expired is absent, whether or not Redis deleted it yet
  if r.e <= NOW then return nil, true end
  return r
end

local function out(code, detail, v)
  local o = {code, detail}
  if v then for i = 1, 10 do o[i + 2] = v[i] end end
  return o
end

-- changed answers with raw, the fields as loaded, updated by the writes
-- just made (index into FIELDS -> new value), without reading them back.
local function changed(code, raw, upd)
  local v = {}
  for i = 1, 10 do v[i] = raw[i] end
  for i, x in pairs(upd) do v[i] = x end
  return out(code, '', v)
end

-- keep pushes a key's physical expiry to at least at_ms, so the indexes
-- outlive every record they name and vanish after the last one.
local function keep(k, at_ms)
  local p = redis.call('PTTL', k)
  if p == -1 or (p >= 0 and REAL_MS + p < at_ms) then
    redis.call('PEXPIREAT', k, at_ms)
  end
end

-- expire ties the record's physical life to expires_at (rounded up to the
-- millisecond PEXPIREAT takes) and keeps the indexes at least as long.
local function expire(member, e)
  local at = math.ceil(e / 1000)
  redis.call('PEXPIREAT', KEYS[4], at)
  redis.call('ZADD', KEYS[2], n2s(e), member)
  -- The three index keys are always extended together, so the expiry
  -- index's TTL stands for all of them; a key recreated without a TTL
  -- is recreated with the expiry index (the namespace set: while one of
  -- its namespaces' indexes lives) and reads as -1 here.
  -- An hour of slack spares the next writes the extension: with a fixed
  -- retention every new record outlives the previous ones.
  local p = redis.call('PTTL', KEYS[2])
  if p == -1 or (p >= 0 and REAL_MS + p < at) then
    for i = 1, 3 do keep(KEYS[i], at + 3600000) end
  end
end

local function drop(member)
  redis.call('DEL', ARGV[2] .. member)
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
  if redis.call('ZCARD', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[3])
  end
end

-- sweep removes a few records whose expires_at has passed, so the indexes
-- stay close to the live set without a background job.
local function sweep(n)
  local ms = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', n2s(NOW), 'LIMIT', 0, n)
  for _, m in ipairs(ms) do
    local e = redis.call('HGET', ARGV[2] .. m, 'e')
    if e and tonumber(e) > NOW then
      redis.call('ZADD', KEYS[2], e, m)
    else
      drop(m)
    end
  end
end
`

// Reserve: ARGV[5] fingerprint, ARGV[6] lease µs, ARGV[7] hold µs
// (max(retention, lease)). Code = storage.Outcome.
const reserveSrc = prelude + `
local fp, lease, hold = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
sweep(4)
local r, stale = load(KEYS[4])
if not r then
  local e = NOW + hold
  if stale then redis.call('DEL', KEYS[4]) end
  redis.call('HSET', KEYS[4], 'f', fp, 's', '1', 't', '1', 'a', '1', 'c', n2s(NOW),
    'l', n2s(NOW + lease), 'd', '0', 'e', n2s(e))
  redis.call('ZADD', KEYS[1], 0, ARGV[4])
  redis.call('SADD', KEYS[3], ARGV[3])
  expire(ARGV[4], e)
  return out(1, '', {fp, '1', '1', '1', n2s(NOW), n2s(NOW + lease), '0', n2s(e), false, false})
end
if r.f ~= fp then return out(4, '', r.raw) end
if r.s == 2 then return out(2, '', r.raw) end
if r.s == 1 and r.l > NOW then return out(3, '', r.raw) end
-- takeover: RELEASED, or IN_PROGRESS whose lease ran out
local e = math.max(r.e, NOW + hold)
redis.call('HSET', KEYS[4], 's', '1', 't', n2s(r.t + 1), 'a', n2s(r.a + 1),
  'l', n2s(NOW + lease), 'd', '0', 'e', n2s(e))
redis.call('HDEL', KEYS[4], 'r')
expire(ARGV[4], e)
return changed(1, r.raw, {[2] = '1', [3] = n2s(r.t + 1), [4] = n2s(r.a + 1), [6] = n2s(NOW + lease),
  [7] = '0', [8] = n2s(e), [9] = false})
`

// Per-record result codes of the other scripts.
const (
	codeOK            = 0
	codeNotFound      = 1
	codeLeaseLost     = 2
	codeNotInProgress = 3
)

// Complete: ARGV[5] token, ARGV[6] result blob, ARGV[7] retention µs.
const completeSrc = prelude + `
local tok, res, ret = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local r = load(KEYS[4])
if not r then return out(1, '') end
if r.t ~= tok then return out(2, 'token', r.raw) end
if r.s == 2 then
  if r.r == res then return out(0, '', r.raw) end
  return out(2, 'result', r.raw)
end
if r.s == 3 then return out(2, 'released', r.raw) end
local e = NOW + ret
redis.call('HSET', KEYS[4], 's', '2', 'r', res, 'd', n2s(NOW), 'e', n2s(e))
expire(ARGV[4], e)
return changed(0, r.raw, {[2] = '2', [7] = n2s(NOW), [8] = n2s(e), [9] = res})
`

// Release: ARGV[5] token.
const releaseSrc = prelude + `
local tok = tonumber(ARGV[5])
local r = load(KEYS[4])
if not r then return out(1, '') end
if r.t ~= tok then return out(2, 'token', r.raw) end
if r.s == 3 then return out(0, '', r.raw) end
if r.s == 2 then return out(2, 'completed', r.raw) end
redis.call('HSET', KEYS[4], 's', '3')
return changed(0, r.raw, {[2] = '3'})
`

// holderCheck is the guard of ExtendLease and Checkpoint: only the current
// token, only IN_PROGRESS.
const holderCheck = `
local tok = tonumber(ARGV[5])
local r = load(KEYS[4])
if not r then return out(1, '') end
if r.t ~= tok then return out(2, 'token', r.raw) end
if r.s ~= 1 then return out(2, 'state', r.raw) end
`

// ExtendLease: ARGV[5] token, ARGV[6] ttl µs.
const extendSrc = prelude + holderCheck + `
local l = NOW + tonumber(ARGV[6])
local e = math.max(r.e, l)
redis.call('HSET', KEYS[4], 'l', n2s(l), 'e', n2s(e))
expire(ARGV[4], e)
return changed(0, r.raw, {[6] = n2s(l), [8] = n2s(e)})
`

// Checkpoint: ARGV[5] token, ARGV[6] checkpoint blob.
const checkpointSrc = prelude + holderCheck + `
redis.call('HSET', KEYS[4], 'k', ARGV[6])
return changed(0, r.raw, {[10] = ARGV[6]})
`

const lookupSrc = prelude + `
local r = load(KEYS[4])
if not r then return out(1, '') end
return out(0, '', r.raw)
`

const deleteSrc = prelude + `
local r = load(KEYS[4])
if not r then
  if redis.call('EXISTS', KEYS[4]) == 1 then drop(ARGV[4]) end
  return out(1, '')
end
drop(ARGV[4])
return out(0, '', r.raw)
`

const forceReleaseSrc = prelude + `
local r = load(KEYS[4])
if not r then return out(1, '') end
if r.s == 3 then return out(0, '', r.raw) end
if r.s == 2 then return out(3, '', r.raw) end
redis.call('HSET', KEYS[4], 's', '3')
return changed(0, r.raw, {[2] = '3'})
`

// List: ARGV[4] ZRANGEBYLEX start, ARGV[5] key prefix, ARGV[6] records
// wanted, ARGV[7] members to examine at most. Reply {done, last examined
// member, {{key, f, s, …}, …}}; dead members met on the way are removed.
const listSrc = prelude + `
local start, prefix = ARGV[4], ARGV[5]
local want, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local recs, n, seen, last = {}, 0, 0, false
while true do
  local ms = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, 128)
  if #ms == 0 then return {1, last, recs} end
  for _, m in ipairs(ms) do
    if #prefix > 0 and string.sub(m, 1, #prefix) ~= prefix then return {1, last, recs} end
    seen = seen + 1
    last = m
    local v = redis.call('HMGET', ARGV[2] .. m, unpack(FIELDS))
    if v[8] and tonumber(v[8]) > NOW then
      local o = {m}
      for i = 1, 10 do o[i + 1] = v[i] end
      n = n + 1
      recs[n] = o
      if n >= want then return {0, last, recs} end
    else
      drop(m)
    end
    if seen >= budget then return {0, last, recs} end
  end
  start = '(' .. last
end
`

// Stats: ARGV[4] ZRANGEBYLEX start, ARGV[5] members to examine at most.
// Reply {done, last examined member, in_progress, completed, released}.
const statsSrc = prelude + `
local start, budget = ARGV[4], tonumber(ARGV[5])
local c = {0, 0, 0}
local seen, last = 0, false
while true do
  local ms = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, 128)
  if #ms == 0 then return {1, last, c[1], c[2], c[3]} end
  for _, m in ipairs(ms) do
    seen = seen + 1
    last = m
    local v = redis.call('HMGET', ARGV[2] .. m, 's', 'e')
    if v[2] and tonumber(v[2]) > NOW then
      local s = tonumber(v[1])
      if c[s] then c[s] = c[s] + 1 end
    else
      drop(m)
    end
    if seen >= budget then return {0, last, c[1], c[2], c[3]} end
  end
  start = '(' .. last
end
`

var (
	reserveScript      = goredis.NewScript(reserveSrc)
	completeScript     = goredis.NewScript(completeSrc)
	releaseScript      = goredis.NewScript(releaseSrc)
	extendScript       = goredis.NewScript(extendSrc)
	checkpointScript   = goredis.NewScript(checkpointSrc)
	lookupScript       = goredis.NewScript(lookupSrc)
	deleteScript       = goredis.NewScript(deleteSrc)
	forceReleaseScript = goredis.NewScript(forceReleaseSrc)
	listScript         = goredis.NewScript(listSrc)
	statsScript        = goredis.NewScript(statsSrc)

	allScripts = []*goredis.Script{reserveScript, completeScript, releaseScript, extendScript,
		checkpointScript, lookupScript, deleteScript, forceReleaseScript, listScript, statsScript}
)
