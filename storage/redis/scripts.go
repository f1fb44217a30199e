package redis

import goredis "github.com/redis/go-redis/v9"

// Every script works on one record and sees:
//
//	KEYS[1] the record (STRING)
//	ARGV[1] clock offset in µs (tests only; 0 in production)
//	ARGV[2…] the operation's own arguments
//
// except Reserve and Complete, the hot paths, which take any number of
// records of one tenant (so one cluster slot), KEYS[i] with its three
// arguments at ARGV[3i-1…3i+1], run them in order and answer a list of the
// per-record replies: concurrent calls and batch calls share one script
// run, one TIME and one reply instead of paying for each.
//
// There are no index keys: a write is the record alone, so Reserve of a new
// key is TIME, GET and SET … PXAT, and Redis deletes a record at its
// expires_at by itself. List and Stats find records with SCAN (redis.go).
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
// answer with, or {code, detail} when there is none; code -1 is a record
// its script could not handle, with Redis's or Lua's error as detail.
const prelude = `
local T = redis.call('TIME')
local NOW = T[1] * 1000000 + T[2] + ARGV[1]
local HDR = '>BBI8I4I8I8I8I8I4c0I4c0'

-- load returns the record, nil when absent; expired is absent, whether or
-- not Redis deleted it yet. A value it cannot read (damaged, of another
-- layout version, or of no known state) raises 'idem:damaged', which Go
-- names per record.
local function load(key)
  local v = redis.call('GET', key)
  if not v then return nil end
  local ok, ver, s, t, a, c, l, d, e, f, r, pos = pcall(struct.unpack, HDR, v)
  if not ok or ver ~= 2 or s < 1 or s > 3 then error({err = 'idem:damaged'}) end
  if e <= NOW then return nil end
  return {v = v, s = s, t = t, a = a, c = c, l = l, d = d, e = e, f = f, r = r, pos = pos}
end

-- store writes the record at key (k: checkpoint blob) with its physical
-- expiry at expires_at, rounded up to the millisecond PXAT takes, and
-- returns it. PXAT goes as text: Redis 7.2.0–7.2.4 pass a Lua number such
-- as 1.8e12 as '1.8e+12', which SET refuses.
local function store(key, s, t, a, c, l, d, e, f, r, k)
  local v = struct.pack(HDR, 2, s, t, a, c, l, d, e, #f, f, #r, r) .. k
  redis.call('SET', key, v, 'PXAT', string.format('%d', math.ceil(e / 1000)))
  return v
end

-- each runs op(key, a, b, c) for every key with its three arguments. A
-- record whose op fails (a damaged value, a refused write) answers
-- {-1, why}; the others go on. An op writes once, last, so a failed one
-- wrote nothing, and Redis keeps the writes of the records before it.
local function each(op)
  local out = {}
  for i, key in ipairs(KEYS) do
    local ok, r = pcall(op, key, ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1])
    if ok then
      out[i] = r
    elseif type(r) == 'table' and r.err then
      out[i] = {-1, r.err}
    else
      out[i] = {-1, tostring(r)}
    end
  end
  return out
end

local function ckpt(r) return string.sub(r.v, r.pos) end
`

// Reserve, per record: fingerprint, lease µs, hold µs (max(retention,
// lease)). Code = storage.Outcome.
const reserveSrc = prelude + `
return each(function(key, fp, lease, hold)
  local r = load(key)
  if not r then
    local e = NOW + hold
    return {1, '', store(key, 1, 1, 1, NOW, NOW + lease, 0, e, fp, '', '')}
  end
  if r.f ~= fp then return {4, '', r.v} end
  if r.s == 2 then return {2, '', r.v} end
  if r.s == 1 and r.l > NOW then return {3, '', r.v} end
  -- takeover: RELEASED, or IN_PROGRESS whose lease ran out
  local e = math.max(r.e, NOW + hold)
  return {1, '', store(key, 1, r.t + 1, r.a + 1, r.c, NOW + lease, 0, e, r.f, '', ckpt(r))}
end)
`

// Per-record result codes of the other scripts.
const (
	codeOK            = 0
	codeNotFound      = 1
	codeLeaseLost     = 2
	codeNotInProgress = 3
)

// Complete, per record: token, result blob, retention µs.
const completeSrc = prelude + `
return each(function(key, tok, res, retention)
  tok = tonumber(tok)
  local r = load(key)
  if not r then return {1, ''} end
  if r.t ~= tok then return {2, 'token', r.v} end
  if r.s == 2 then
    if r.r == res then return {0, '', r.v} end
    return {2, 'result', r.v}
  end
  if r.s == 3 then return {2, 'released', r.v} end
  return {0, '', store(key, 2, r.t, r.a, r.c, r.l, NOW, NOW + retention, r.f, res, ckpt(r))}
end)
`

// Release: ARGV[2] token.
const releaseSrc = prelude + `
local tok = tonumber(ARGV[2])
local r = load(KEYS[1])
if not r then return {1, ''} end
if r.t ~= tok then return {2, 'token', r.v} end
if r.s == 3 then return {0, '', r.v} end
if r.s == 2 then return {2, 'completed', r.v} end
return {0, '', store(KEYS[1], 3, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ckpt(r))}
`

// holderCheck is the guard of ExtendLease and Checkpoint: only the current
// token (ARGV[2]), only IN_PROGRESS.
const holderCheck = `
local tok = tonumber(ARGV[2])
local r = load(KEYS[1])
if not r then return {1, ''} end
if r.t ~= tok then return {2, 'token', r.v} end
if r.s ~= 1 then return {2, 'state', r.v} end
`

// ExtendLease: ARGV[3] ttl µs.
const extendSrc = prelude + holderCheck + `
local l = NOW + ARGV[3]
return {0, '', store(KEYS[1], r.s, r.t, r.a, r.c, l, r.d, math.max(r.e, l), r.f, r.r, ckpt(r))}
`

// Checkpoint: ARGV[3] checkpoint blob.
const checkpointSrc = prelude + holderCheck + `
return {0, '', store(KEYS[1], r.s, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ARGV[3])}
`

const lookupSrc = prelude + `
local r = load(KEYS[1])
if not r then return {1, ''} end
return {0, '', r.v}
`

// Delete removes even a value load cannot read, answering {0, 'damaged'}:
// deleting such a record is how an operator frees its key.
const deleteSrc = prelude + `
local ok, r = pcall(load, KEYS[1])
redis.call('DEL', KEYS[1])
if not ok then return {0, 'damaged'} end
if not r then return {1, ''} end
return {0, '', r.v}
`

const forceReleaseSrc = prelude + `
local r = load(KEYS[1])
if not r then return {1, ''} end
if r.s == 3 then return {0, '', r.v} end
if r.s == 2 then return {3, '', r.v} end
return {0, '', store(KEYS[1], 3, r.t, r.a, r.c, r.l, r.d, r.e, r.f, r.r, ckpt(r))}
`

// liveSrc answers which of KEYS (records of one tenant, so one slot) exist
// at the script's now, for List and Stats: {i, record, i, record, …} with
// i the 1-based position in KEYS, or -i and an empty string for a record load cannot
// read.
const liveSrc = prelude + `
local out = {}
for i, k in ipairs(KEYS) do
  local ok, r = pcall(load, k)
  if not ok then
    out[#out + 1] = -i
    out[#out + 1] = ''
  elseif r then
    out[#out + 1] = i
    out[#out + 1] = r.v
  end
end
return out
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
	liveScript         = goredis.NewScript(liveSrc)

	allScripts = []*goredis.Script{reserveScript, completeScript, releaseScript, extendScript,
		checkpointScript, lookupScript, deleteScript, forceReleaseScript, liveScript}
)
