package redis

import goredis "github.com/redis/go-redis/v9"

// Every script sees the same KEYS and leading ARGV:
//
//	KEYS[1] lexical index of the namespace (ZSET, score 0, member = key)
//	KEYS[2] expiry index of the namespace (ZSET, score = expires_at µs)
//	KEYS[3] namespaces of the tenant (SET)
//	KEYS[4] the record (STRING), for per-record scripts
//	ARGV[1] clock offset in µs (tests only; 0 in production)
//	ARGV[2] record key prefix of the namespace (record key = ARGV[2]..key)
//	ARGV[3] namespace
//	ARGV[4] key (per-record scripts)
//
// All keys carry the tenant's hash tag, so they live in one cluster slot;
// the sweep touches records of the same namespace by name, which Redis
// Cluster accepts because they share that slot.
//
// A record is one string, struct.pack'd with HDR and decoded in Go by
// decodeRecord: version, state (1 IN_PROGRESS, 2 COMPLETED, 3 RELEASED),
// token, attempts, created_at, lease_expires_at, completed_at (0 = unset),
// expires_at (times µs since the epoch, big-endian integers), then the
// fingerprint and the result blob, each length-prefixed (an empty result
// is none), then the checkpoint blob to the end. Lua only compares the
// blobs for equality. One GET reads it and one SET … PXAT writes it with
// its physical expiry, which is what makes the common paths cheap.
//
// Replies of per-record scripts: {code, detail, record} with the record to
// answer with, or {code, detail} when there is none.
const prelude = `
local T = redis.call('TIME')
local NOW = T[1] * 1000000 + T[2] + ARGV[1]
local HDR = '>BBI8I4I8I8I8I8I4c0I4c0'

-- load returns the record, nil when absent; expired is absent, whether or
-- not Redis deleted it yet.
local function load(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local _, s, t, a, c, l, d, e, f, r, pos = struct.unpack(HDR, v)
  if e <= NOW then return nil end
  return {v = v, s = s, t = t, a = a, c = c, l = l, d = d, e = e, f = f, r = r, pos = pos}
end

-- store writes the record (k: checkpoint blob) with its physical expiry at
-- expires_at, rounded up to the millisecond PXAT takes, and returns it.
local function store(s, t, a, c, l, d, e, f, r, k)
  local v = struct.pack(HDR, 2, s, t, a, c, l, d, e, #f, f, #r, r) .. k
  redis.call('SET', KEYS[4], v, 'PXAT', math.ceil(e / 1000))
  return v
end

local function ckpt(r) return string.sub(r.v, r.pos) end
`

// coverFns and dropFns are spliced into a script only where it needs them,
// inside the branch that does: a closure costs Redis CPU on every call
// that creates it, and the replay of a completed key needs none of them.
const coverFns = `
local REAL_MS = T[1] * 1000 + math.floor(T[2] / 1000)
-- keep pushes a key's physical expiry to at least at_ms.
local function keep(k, at_ms)
  local p = redis.call('PTTL', k)
  if p == -1 or (p >= 0 and REAL_MS + p < at_ms) then
    redis.call('PEXPIREAT', k, at_ms)
  end
end

-- cover keeps the indexes alive at least until e, so they outlive every
-- record they name and vanish after the last one. The three index keys are
-- extended together, so the lexical index's TTL stands for all of them;
-- an hour of slack spares the next writes the extension.
local function cover(e, p)
  local at = math.ceil(e / 1000)
  p = p or redis.call('PTTL', KEYS[1])
  if p < 0 or REAL_MS + p < at then
    for i = 1, 3 do keep(KEYS[i], at + 3600000) end
  end
end
`

const dropFns = `
local function drop(member)
  redis.call('DEL', ARGV[2] .. member)
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZREM', KEYS[2], member)
  if redis.call('ZCARD', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[3], ARGV[3])
  end
end

-- sweep removes up to n members of the expiry index whose expires_at has
-- passed, so the indexes stay close to the live set without a background
-- job. Scores are the expires_at of the record's creation or takeover; a
-- record that lives longer (Complete, ExtendLease) is re-scored instead.
-- Called right after a creation, so the lexical index is not empty.
local function sweep(n)
  local ms = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW, 'LIMIT', 0, n)
  if #ms == 0 then return end
  local dead = {}
  for _, m in ipairs(ms) do
    local v = redis.call('GET', ARGV[2] .. m)
    local e = v and select(8, struct.unpack(HDR, v))
    if e and e > NOW then
      redis.call('ZADD', KEYS[2], e, m)
    else
      -- usually Redis has deleted it already (PXAT); not under a test clock
      if v then redis.call('DEL', ARGV[2] .. m) end
      dead[#dead + 1] = m
    end
  end
  if #dead > 0 then
    redis.call('ZREM', KEYS[1], unpack(dead))
    redis.call('ZREM', KEYS[2], unpack(dead))
  end
end
`

// Reserve: ARGV[5] fingerprint, ARGV[6] lease µs, ARGV[7] hold µs
// (max(retention, lease)). Code = storage.Outcome. Only a new key touches
// the indexes and sweeps; a replay is one GET.
const reserveSrc = prelude + `
local fp = ARGV[5]
local r = load(KEYS[4])
if not r then
` + coverFns + dropFns + `
  local e = NOW + ARGV[7]
  local p = redis.call('PTTL', KEYS[1])
  local v = store(1, 1, 1, NOW, NOW + ARGV[6], 0, e, fp, '', '')
  redis.call('ZADD', KEYS[1], 0, ARGV[4])
  redis.call('ZADD', KEYS[2], e, ARGV[4])
  if p == -2 then redis.call('SADD', KEYS[3], ARGV[3]) end
  cover(e, p)
  -- One creation in 8 (by the microsecond of TIME) sweeps up to 32: four
  -- times the rate records are created, with 7 creations in 8 not paying
  -- the sweep's calls.
  if NOW % 8 < 1 then sweep(32) end
  return {1, '', v}
end
if r.f ~= fp then return {4, '', r.v} end
if r.s == 2 then return {2, '', r.v} end
if r.s == 1 and r.l > NOW then return {3, '', r.v} end
-- takeover: RELEASED, or IN_PROGRESS whose lease ran out
` + coverFns + `
local e = math.max(r.e, NOW + ARGV[7])
local v = store(1, r.t + 1, r.a + 1, r.c, NOW + ARGV[6], 0, e, r.f, '', ckpt(r))
redis.call('ZADD', KEYS[2], e, ARGV[4])
cover(e)
return {1, '', v}
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
local tok, res = tonumber(ARGV[5]), ARGV[6]
local r = load(KEYS[4])
if not r then return {1, ''} end
if r.t ~= tok then return {2, 'token', r.v} end
if r.s == 2 then
  if r.r == res then return {0, '', r.v} end
  return {2, 'result', r.v}
end
if r.s == 3 then return {2, 'released', r.v} end
` + coverFns + `
local e = NOW + ARGV[7]
local v = store(2, r.t, r.a, r.c, r.l, NOW, e, r.f, res, ckpt(r))
cover(e)
return {0, '', v}
`

// Release: ARGV[5] token.
const releaseSrc = prelude + `
local tok = tonumber(ARGV[5])
local r = load(KEYS[4])
if not r then return {1, ''} end
if r.t ~= tok then return {2, 'token', r.v} end
if r.s == 3 then return {0, '', r.v} end
if r.s == 2 then return {2, 'completed', r.v} end
return {0, '', store(3, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ckpt(r))}
`

// holderCheck is the guard of ExtendLease and Checkpoint: only the current
// token, only IN_PROGRESS.
const holderCheck = `
local tok = tonumber(ARGV[5])
local r = load(KEYS[4])
if not r then return {1, ''} end
if r.t ~= tok then return {2, 'token', r.v} end
if r.s ~= 1 then return {2, 'state', r.v} end
`

// ExtendLease: ARGV[5] token, ARGV[6] ttl µs.
const extendSrc = prelude + holderCheck + coverFns + `
local l = NOW + ARGV[6]
local e = math.max(r.e, l)
local v = store(r.s, r.t, r.a, r.c, l, r.d, e, r.f, r.r, ckpt(r))
cover(e)
return {0, '', v}
`

// Checkpoint: ARGV[5] token, ARGV[6] checkpoint blob.
const checkpointSrc = prelude + holderCheck + `
return {0, '', store(r.s, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ARGV[6])}
`

const lookupSrc = prelude + `
local r = load(KEYS[4])
if not r then return {1, ''} end
return {0, '', r.v}
`

const deleteSrc = prelude + dropFns + `
local r = load(KEYS[4])
if not r then
  if redis.call('EXISTS', KEYS[4]) == 1 then drop(ARGV[4]) end
  return {1, ''}
end
drop(ARGV[4])
return {0, '', r.v}
`

const forceReleaseSrc = prelude + `
local r = load(KEYS[4])
if not r then return {1, ''} end
if r.s == 3 then return {0, '', r.v} end
if r.s == 2 then return {3, '', r.v} end
return {0, '', store(3, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ckpt(r))}
`

// List: ARGV[4] ZRANGEBYLEX start, ARGV[5] key prefix, ARGV[6] records
// wanted, ARGV[7] members to examine at most. Reply {done, last examined
// member, {key, record, key, record, …}}; dead members met on the way are
// removed.
const listSrc = prelude + dropFns + `
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
    local v = redis.call('GET', ARGV[2] .. m)
    if v and select(8, struct.unpack(HDR, v)) > NOW then
      recs[2 * n + 1] = m
      recs[2 * n + 2] = v
      n = n + 1
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
const statsSrc = prelude + dropFns + `
local start, budget = ARGV[4], tonumber(ARGV[5])
local c = {0, 0, 0}
local seen, last = 0, false
while true do
  local ms = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, 128)
  if #ms == 0 then return {1, last, c[1], c[2], c[3]} end
  for _, m in ipairs(ms) do
    seen = seen + 1
    last = m
    local v = redis.call('GET', ARGV[2] .. m)
    local s, e
    if v then
      local _, s1, _, _, _, _, _, e1 = struct.unpack(HDR, v)
      s, e = s1, e1
    end
    if e and e > NOW then
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
