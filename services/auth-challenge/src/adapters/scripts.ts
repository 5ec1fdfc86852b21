/**
 * The challenge state machine runs inside Redis as Lua scripts: each request is one round trip
 * that reads and changes the user's keys atomically (they share the user's hash tag, so this holds
 * on Redis Cluster too). Any instance can verify any challenge; concurrent verifications of one
 * challenge are serialised by Redis, so a code can never be accepted twice.
 */

// Shared helpers: SHA-1 from redis.sha1hex, HMAC-SHA1, RFC 4226 HOTP, constant-time compare,
// and the keystream that unmasks TOTP secrets (mirror of projectionKeystream in libs/crypto/src/codes.ts).
const HELPERS = `
-- Hex to bytes, 32 bits per tonumber: the per-call cost of HMAC in Lua is mostly this.
local function hex2bin(h)
  local out = {}
  for n = 1, #h, 8 do
    local v = tonumber(string.sub(h, n, n + 7), 16)
    out[#out + 1] = string.char(math.floor(v / 16777216), math.floor(v / 65536) % 256, math.floor(v / 256) % 256, v % 256)
  end
  return table.concat(out)
end
local function sha1(s) return hex2bin(redis.sha1hex(s)) end
local function ct_equal(a, b)
  if #a ~= #b then return false end
  local x, y, acc = {string.byte(a, 1, -1)}, {string.byte(b, 1, -1)}, 0
  for n = 1, #x do acc = bit.bor(acc, bit.bxor(x[n], y[n])) end
  return acc == 0
end
-- HMAC key pads; the zero padding of the key XORs to constant bytes (0x36 and 0x5c).
local function hmac_pads(key)
  if #key > 64 then key = sha1(key) end
  local k, i, o = {string.byte(key, 1, -1)}, {}, {}
  for n = 1, #k do i[n] = bit.bxor(k[n], 0x36); o[n] = bit.bxor(k[n], 0x5c) end
  return string.char(unpack(i)) .. string.rep('6', 64 - #k), string.char(unpack(o)) .. string.rep(string.char(92), 64 - #k)
end
local function u32be(n)
  return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end
local function hotp(ipad, opad, counter, digits)
  local h = sha1(opad .. sha1(ipad .. u32be(math.floor(counter / 4294967296)) .. u32be(counter % 4294967296)))
  local off = (h:byte(20) % 16) + 1
  local b1, b2, b3, b4 = h:byte(off, off + 3)
  local bin = (b1 % 128) * 16777216 + b2 * 65536 + b3 * 256 + b4
  return string.format('%0' .. digits .. 'd', bin % (10 ^ digits))
end
local function unmask(ukey, nonce, masked)
  local stream, ctr = '', 0
  while #stream < #masked do stream = stream .. sha1(ukey .. nonce .. string.char(ctr)); ctr = ctr + 1 end
  local m, k, out = {string.byte(masked, 1, -1)}, {string.byte(stream, 1, #masked)}, {}
  for n = 1, #m do out[n] = bit.bxor(m[n], k[n]) end
  return string.char(unpack(out))
end
`;

/**
 * start. KEYS: user, challenge, sms sends window, user's failed verifications.
 * ARGV: tenantId, userId, requested method ('' = default), enabled methods csv, now ms,
 * expiresAt ms, max attempts, code hash, ttl s, sms max sends, sms window s, tenant known '1'/'0',
 * lockout threshold.
 * Returns {status, method, reason, displayName, email, phoneNumber, language, dataKey} (the data key
 * still wrapped, '' when the projection has none)
 * or {'unknown_tenant'} | {'not_found'} | {'rate_limited', retryAfterSeconds} | {'locked', retryAfterSeconds}.
 */
export const START_SCRIPT = `
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[13]) then
  return {'locked', tostring(redis.call('TTL', KEYS[4]))}
end
local u = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'methods', 'defaultMethod', 'displayName', 'email', 'phoneNumber', 'language', 'dataKey')
local exists = u[1] ~= false
if not exists and ARGV[12] ~= '1' then return {'unknown_tenant'} end
if exists and (u[1] ~= ARGV[1] or u[2] ~= ARGV[2]) then return {'not_found'} end
local registered, regset, enabled = {}, {}, {}
if exists and u[3] then for m in string.gmatch(u[3], '[^,]+') do registered[#registered + 1] = m; regset[m] = true end end
for m in string.gmatch(ARGV[4], '[^,]+') do enabled[m] = true end
local requested, method, reason = ARGV[3], nil, nil
if requested ~= '' then
  if not regset[requested] then reason = 'method_not_registered'
  elseif not enabled[requested] then reason = 'method_disabled'
  else method = requested end
else
  local d = u[4]
  if d and regset[d] and enabled[d] then method = d
  else for _, m in ipairs(registered) do if enabled[m] then method = m; break end end end
  if not method then
    if #registered == 0 then reason = 'no_method_registered' else reason = 'method_disabled' end
  end
end
if method == 'sms' then
  local sent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if sent >= tonumber(ARGV[10]) then return {'rate_limited', tostring(redis.call('TTL', KEYS[3]))} end
  if redis.call('INCR', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[11]) end
end
local status = 'registration_required'
if method then status = 'pending' end
local recorded = method or requested
redis.call('HSET', KEYS[2], 'tenantId', ARGV[1], 'userId', ARGV[2], 'method', recorded, 'status', status,
  'reason', reason or '', 'attempts', 0, 'maxAttempts', ARGV[7], 'expiresAt', ARGV[6], 'createdAt', ARGV[5])
if method == 'sms' then redis.call('HSET', KEYS[2], 'codeHash', ARGV[8]) end
redis.call('EXPIRE', KEYS[2], ARGV[9])
return {status, recorded, reason or '', u[5] or '', u[6] or '', u[7] or '', u[8] or '', u[9] or ''}
`;

/**
 * verify. KEYS: challenge, totp tokens, totp last steps, user's failed verifications.
 * ARGV: tenantId, now ms, keyed hash of the presented code, the code, per-user projection key,
 * lockout threshold, failure-counter window s, lockout duration s.
 * A user whose wrong codes (across all challenges) reached the threshold is locked out: no code
 * is compared until the lockout ends, so starting new challenges buys no new guesses.
 * Returns {'approved', userId, method, tokenId} | {'rejected', userId, method, attempts, remaining, cause}
 * | {'exhausted', userId, method, attempts, cause} | {'expired', userId, method}
 * | {'expired_again', userId, method} | {'conflict', userId, method, status} | {'not_found'}.
 */
export const VERIFY_SCRIPT = `${HELPERS}
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'reason', 'maxAttempts', 'expiresAt', 'codeHash')
if not ch[1] or ch[1] ~= ARGV[1] then return {'not_found'} end
local userId, method, status = ch[2], ch[3], ch[4]
if status ~= 'pending' then
  if status == 'denied' and ch[5] == 'expired' then return {'expired_again', userId, method} end
  return {'conflict', userId, method, status}
end
local now = tonumber(ARGV[2])
local threshold = tonumber(ARGV[6])
if tonumber(redis.call('GET', KEYS[4]) or '0') >= threshold then
  return {'locked', tostring(redis.call('TTL', KEYS[4]))}
end
if now >= tonumber(ch[7]) then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'expired', 'completedAt', ARGV[2])
  return {'expired', userId, method}
end
local matched, cause, tokenId, step = false, 'mismatch', '', 0
if method == 'sms' then
  matched = ct_equal(ch[8] or '', ARGV[3])
elseif method == 'totp' then
  local code = ARGV[4]
  local tokens = redis.call('HGETALL', KEYS[2])
  for n = 1, #tokens, 2 do
    local id = tokens[n]
    local digits, period, nonce, masked = string.match(tokens[n + 1], '^(%d+):(%d+):(%x+):(%x+)$')
    if not matched and digits and #code == tonumber(digits) then
      local ipad, opad = hmac_pads(unmask(ARGV[5], hex2bin(nonce), hex2bin(masked)))
      local t = math.floor(now / 1000 / tonumber(period))
      local last = tonumber(redis.call('HGET', KEYS[3], id) or '-1')
      -- Current step first, then the neighbours; stop at the first fresh match (a match is
      -- answered as approved anyway, so stopping early tells an observer nothing).
      for _, s in ipairs({t, t - 1, t + 1}) do
        if not matched and ct_equal(hotp(ipad, opad, s, tonumber(digits)), code) then
          if s > last then
            matched = true; tokenId = id; step = s
          else
            cause = 'reused'
          end
        end
      end
    end
  end
end
if matched then
  if method == 'totp' then redis.call('HSET', KEYS[3], tokenId, step) end
  redis.call('HSET', KEYS[1], 'status', 'approved', 'reason', '', 'completedAt', ARGV[2])
  redis.call('DEL', KEYS[4])
  return {'approved', userId, method, tokenId}
end
local fails = redis.call('INCR', KEYS[4])
if fails == 1 then redis.call('EXPIRE', KEYS[4], ARGV[7]) end
if fails >= threshold then redis.call('EXPIRE', KEYS[4], ARGV[8]) end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local max = tonumber(ch[6])
if attempts >= max then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'too_many_attempts', 'completedAt', ARGV[2])
  return {'exhausted', userId, method, tostring(attempts), cause}
end
return {'rejected', userId, method, tostring(attempts), tostring(max - attempts), cause}
`;

/** Exposed for the RFC 6238 test-vector tests of the Lua HOTP (same code as in VERIFY_SCRIPT). */
export const HOTP_TEST_SCRIPT = `${HELPERS}
local ipad, opad = hmac_pads(ARGV[1])
return hotp(ipad, opad, tonumber(ARGV[2]), tonumber(ARGV[3]))
`;
export const UNMASK_TEST_SCRIPT = `${HELPERS}
return unmask(ARGV[1], ARGV[2], ARGV[3])
`;
