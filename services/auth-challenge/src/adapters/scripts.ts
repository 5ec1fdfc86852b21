/**
 * The challenge state machine runs inside Redis as Lua scripts: each decision reads and changes
 * the user's keys atomically (they share the user's hash tag, so this holds on Redis Cluster
 * too). Any instance can verify any challenge; concurrent verifications of one challenge are
 * serialised by Redis, so a code can never be accepted twice.
 *
 * Redis never receives what would recover a code or a TOTP secret: an SMS code arrives only as
 * its keyed hash, and TOTP codes are computed and compared in auth-challenge, which sends only
 * the outcome (the matching token and time step, or the cause of a mismatch).
 */

/**
 * start. KEYS: user, challenge, SMS and voice sends (sliding window), user's failed verifications (window),
 * user's consecutive failed verifications, the completeness marker of the user's slot, the
 * slot's outbox, the user's block (fraud's projection).
 * ARGV: tenantId, userId, requested method ('' = default), enabled methods csv, now ms,
 * expiresAt ms, max attempts, code hash, ttl s, sms max sends, sms window s, tenant known '1'/'0'/'u' (unread),
 * lockout threshold, consecutive failures cap, challenge id, the request's context (JSON), client
 * IP ('' = none), application ('' = none), client IP locked '1'/'0' (auth-challenge's in-memory
 * copy of fraud's per-IP locks), bypass reason ('' = none; trusted_ip, corporate_network, decided
 * by auth-challenge from the tenant's settings: a known user is approved at once with it), the id
 * of the remember token presented ('' = none), the time since which a legacy client's user needs no
 * MFA ('' = not a legacy client or remember MFA off), '1' when an approval should remember the
 * browser (kept as `rd` on the challenge). KEYS 9, 10 and 11: the user's remembered browsers, last
 * MFA, methods that failed lately (dispatch); KEYS 12: the user's phone number throttled across users
 * until (dispatch); ARGV 24: the client IP's starts that send something throttled until ms ('' = not;
 * IpLocks' copy of fraud's IpThrottled); ARGV 25: '1' for a legacy client of a tenant that allows app
 * passwords (a user who has or once used one, `appPassword` in the projection, is denied
 * app_password_required before any bypass); ARGV 26, 27: the tenant's SMS country rules for phone
 * methods, allowed ('*' = all, else a csv) and blocked (csv), checked against the user's
 * `phoneCountry`. KEYS 13-16 and ARGV 28-32: push (the pending push, push starts, denied and
 * ignored pushes, suspended until; the number's keyed hash, the push rate limit and window s, the
 * refusals that suspend push, the suspension ms). KEYS 17 and 18: the user's TOTP tokens and their
 * last accepted steps. ARGV 33: with a remember token, the time (ms) after which its browser must
 * have been remembered (the tenant's rememberMfa.days as they are now; 0 = any). The client IP and application stay with the challenge (verify's
 * denials carry the IP; a fraud report's e-mail names both).
 * A pending, registration_required, blocked or bypassed reply ({'bypassed', '', reason, profile…})
 * is kept in the outbox (KEEP); a blocked user
 * (or any start from a locked client IP) answers {'blocked', requested method, 'user_blocked' or
 * 'ip_locked', profile and key fields as pending}.
 * Returns {status, method, reason, displayName, email, phoneNumber, language, dataKey, challengePii}
 * (the data key still wrapped, '' when the projection has none; the personal data pre-sealed for
 * challenge events, '' when none), which a pending TOTP challenge follows with the user's tokens
 * as verifyScript answers them (WITH_TOKENS; not in the kept reply)
 * or {'unknown_tenant'} | {'not_found'} | {'rate_limited', retryAfterSeconds, 'user' | 'phone' | 'ip' | 'push', '1' when this start suspended push} | {'locked', retryAfterSeconds}
 * | {'capped'} | {'projection_missing'} (no such user here, and this Redis is not known to hold
 * every user of the slot: lost, flushed or still being rebuilt; a user hash holding only `seq`, an
 * erased user's tombstone or the mark of a user the event log does not know, is no such user).
 */

/** The most decisions a slot's outbox holds by default (OUTBOX_MAX_PER_SLOT; see KEEP). */
export const DEFAULT_OUTBOX_MAX_PER_SLOT = 64;

/** A slot outbox's bound as the scripts' text carries it: a positive integer, or the script is not built. */
function outboxLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`the outbox limit must be a positive integer, not ${String(limit)}`);
  return limit;
}

/**
 * Keeps a decision with the change that takes it: the reply goes into the slot's outbox with the
 * request's context (an opaque JSON object from auth-challenge), under the decision's name
 * "<challengeId>:<decision>[:<n>]", where n (the reply's 4th field) tells apart the decisions a
 * challenge takes several of: `numbered` says which (a rejected code's attempt; a resend's number).
 * The event is built from this record by the instance that took the decision, or by the outbox
 * relay if that instance could not publish it.
 * `limit` bounds the slot's outbox (OUTBOX_MAX_PER_SLOT): while it holds that many decisions (their
 * events not acknowledged by JetStream for long), `outbox_full()` is true, and the script decides
 * nothing ({'outbox_full'}, nothing written, answered `unavailable`), so that a long JetStream outage
 * ends in refusals instead of filling Redis until it refuses every write or evicts the counters that
 * hold brute force back. Checked before the script's first write.
 */
const KEEP = (outbox: string, id: string, ctx: string, limit: number, numbered = `reply[1] == 'rejected'`) => `
local function outbox_full() return redis.call('HLEN', ${outbox}) >= ${outboxLimit(limit)} end
local function kept(reply)
  local name = ${id} .. ':' .. reply[1]
  if ${numbered} then name = name .. ':' .. reply[4] end
  redis.call('HSET', ${outbox}, name, '{"c":' .. ${ctx} .. ',"r":' .. cjson.encode(reply) .. '}')
  return reply
end
`;

/**
 * Appends the user's active TOTP tokens to a reply: (tokenId, spec, last accepted step or '-1')
 * for each, where spec is "digits:period:nonceHex:maskedSecretHex[:sha256]" as the projection
 * holds it (masked: the unmask key never reaches Redis).
 */
const WITH_TOKENS = `
local function with_tokens(reply, tokens_key, steps_key)
  local tokens = redis.call('HGETALL', tokens_key)
  for n = 1, #tokens, 2 do
    reply[#reply + 1] = tokens[n]
    reply[#reply + 1] = tokens[n + 1]
    reply[#reply + 1] = redis.call('HGET', steps_key, tokens[n]) or '-1'
  end
  return reply
end
`;

/** How long a registration_required challenge record stays in Redis (status queries only). */
export const REGISTRATION_REQUIRED_TTL_SECONDS = 60;

/**
 * The most browsers a user has remembered at once (rememberMfa): a remembering approval beyond it
 * forgets the ones remembered longest ago. It bounds the hash that every such approval reads whole.
 */
export const REMEMBERED_BROWSERS_MAX = 50;

/**
 * The tenant's country rules for phone methods (sms.allowedCountries as a csv, '*' = all;
 * blockedCountries as a csv) against a phone's country: whether they exclude it (a phone of unknown
 * country is excluded when only some countries are allowed). As phoneCountryAllowed (verdicts.ts).
 */
const COUNTRY_RULES = `
local function country_excluded(country, allowed, blocked)
  local listed = function(csv) return country ~= '' and string.find(',' .. csv .. ',', ',' .. country .. ',', 1, true) ~= nil end
  return (allowed ~= '*' and not listed(allowed)) or listed(blocked)
end
`;

/**
 * A sliding window of at most `max` members in the last `window` ms (members by time): `member`
 * joins it now, or, when it is full, nothing changes and the answer is when its oldest leaves (ms).
 */
const SLIDING_WINDOW = `
local function admit(key, max, window, now, member)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (now - window))
  if redis.call('ZCARD', key) >= max then
    return tonumber(redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]) + window
  end
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, window)
  return nil
end
`;

export const startScript = (outboxMax: number) => `${KEEP('KEYS[7]', 'ARGV[15]', 'ARGV[16]', outboxMax)}${SLIDING_WINDOW}${COUNTRY_RULES}${WITH_TOKENS}
local u = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'methods', 'defaultMethod', 'displayName', 'email', 'phoneNumber', 'language', 'dataKey', 'challengePii', 'appPassword', 'phoneCountry', 'validFrom')
local exists = u[1] ~= false
-- A tenant whose settings this instance could not read (ARGV[12] 'u': a lookup over its budget, or
-- the log not answering): nothing is decided, nor recorded, under the defaults in place of its own.
if ARGV[12] == 'u' then return {'tenant_unread'} end
-- The slot's outbox is full (KEEP): no decision could be kept with its event, so none is taken.
if outbox_full() then return {'outbox_full'} end
-- A start denied for the user's or the address's state: the sign-in recorded, the challenge kept
-- only for status queries (as a registration_required one, below). fresh: push suspended by this
-- very start (a 10th field, '1': what the fatigue alert counts), not one already in force.
local function deny(reason, fresh)
  redis.call('HSET', KEYS[2], 'tenantId', ARGV[1], 'userId', ARGV[2], 'method', ARGV[3], 'status', 'denied',
    'reason', reason, 'attempts', 0, 'maxAttempts', ARGV[7], 'expiresAt', ARGV[6], 'createdAt', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ${REGISTRATION_REQUIRED_TTL_SECONDS})
  local reply = {'blocked', ARGV[3], reason, u[5] or '', u[6] or '', u[7] or '', u[8] or '', u[9] or '', u[10] or ''}
  if fresh then reply[10] = '1' end
  return kept(reply)
end
if exists and u[1] == ARGV[1] and u[2] == ARGV[2] and redis.call('EXISTS', KEYS[8]) == 1 then return deny('user_blocked') end
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[14]) then return {'capped'} end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[13]) then
  return {'locked', tostring(redis.call('TTL', KEYS[4]))}
end
-- Not found, and the slot not known complete: unless the user hash is there all the same (a
-- tombstone, or user-settings' mark that the log holds no event of the user), the user may
-- be a registered one not rebuilt yet.
if not exists and redis.call('EXISTS', KEYS[6]) == 0 and redis.call('EXISTS', KEYS[1]) == 0 then return {'projection_missing'} end
if not exists and ARGV[12] ~= '1' then return {'unknown_tenant'} end
if exists and (u[1] ~= ARGV[1] or u[2] ~= ARGV[2]) then return {'not_found'} end
if ARGV[19] == '1' then return deny('ip_locked') end
-- A legacy client of a user who has an app password, or once used one (the tenant allowing them):
-- only an app password signs it in (apppasswords.verify), so no bypass either; recorded as denied.
if ARGV[25] == '1' and exists and u[11] == '1' then return deny('app_password_required') end
-- A bypass approves a known user at once, after blocks and locks: a trusted IP or the corporate
-- network (decided by auth-challenge), else a remembered browser (its token's id, unexpired), else a
-- legacy client whose user completed MFA since the given time.
-- A remembered browser counts until its end, and no longer than the tenant's rememberMfa.days as
-- they are now from when it was remembered (ARGV[33]: remembered after that time).
local bypass = ARGV[20]
if bypass == '' and ARGV[21] ~= '' then
  local remembered = redis.call('HGET', KEYS[9], ARGV[21])
  if remembered then
    local untilMs, createdMs = string.match(remembered, '^(%d+):(%d+)')
    if untilMs and tonumber(untilMs) > tonumber(ARGV[5]) and tonumber(createdMs) > tonumber(ARGV[33]) then bypass = 'remembered_device' end
  end
end
if bypass == '' and ARGV[22] ~= '' and tonumber(redis.call('GET', KEYS[10]) or '0') >= tonumber(ARGV[22]) then bypass = 'remembered_device' end
if bypass ~= '' and exists then
  redis.call('HSET', KEYS[2], 'tenantId', ARGV[1], 'userId', ARGV[2], 'method', '', 'status', 'approved',
    'reason', bypass, 'attempts', 0, 'maxAttempts', ARGV[7], 'expiresAt', ARGV[6], 'createdAt', ARGV[5], 'completedAt', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ${REGISTRATION_REQUIRED_TTL_SECONDS})
  return kept({'bypassed', '', bypass, u[5] or '', u[6] or '', u[7] or '', u[8] or '', u[9] or '', u[10] or ''})
end
local registered, regset, enabled = {}, {}, {}
if exists and u[3] then for m in string.gmatch(u[3], '[^,]+') do registered[#registered + 1] = m; regset[m] = true end end
for m in string.gmatch(ARGV[4], '[^,]+') do enabled[m] = true end
-- The tenant's country rules for phone methods (sms.allowedCountries, '*' = all; blockedCountries):
-- a phone in a country they exclude (or of unknown country, when only some are allowed) is not called or texted.
local phoneBlocked = false
if (ARGV[26] ~= '*' or ARGV[27] ~= '') and (regset['sms'] or regset['voice']) then
  if country_excluded(u[12] or '', ARGV[26], ARGV[27]) then
    phoneBlocked = true
    enabled['sms'] = nil
    enabled['voice'] = nil
  end
end
-- Push, against MFA fatigue (KEYS 13, 15, 16; ARGV 30-32): whether push is suspended for the user,
-- or is now, by this start (suspendedNow): a push that ended unanswered counts as ignored (one still
-- waiting is not counted yet), and ARGV[31] denied or ignored pushes within ARGV[30] seconds suspend
-- push for ARGV[32] ms. Looked at once, and only when push may be what this start takes.
local suspendedNow = false
local function push_fatigue()
  local t = tonumber(ARGV[5])
  if tonumber(redis.call('GET', KEYS[16]) or '0') > t then return true end
  local window = tonumber(ARGV[30]) * 1000
  local pending = redis.call('GET', KEYS[13])
  if pending then
    local sep = string.find(pending, '|', 1, true)
    if tonumber(string.sub(pending, sep + 1)) > t then return false end
    redis.call('ZADD', KEYS[15], t, string.sub(pending, 1, sep - 1))
    redis.call('PEXPIRE', KEYS[15], window)
    redis.call('DEL', KEYS[13])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[15], '-inf', '(' .. (t - window))
  if redis.call('ZCARD', KEYS[15]) < tonumber(ARGV[31]) then return false end
  redis.call('SET', KEYS[16], tostring(t + tonumber(ARGV[32])), 'PX', ARGV[32])
  redis.call('DEL', KEYS[15])
  suspendedNow = true
  return true
end
local pushSuspended = nil
local function push_suspended()
  if pushSuspended == nil then pushSuspended = push_fatigue() end
  return pushSuspended
end
local requested, method, reason = ARGV[3], nil, nil
if requested ~= '' then
  if not regset[requested] then reason = 'method_not_registered'
  elseif not enabled[requested] then
    if phoneBlocked and (requested == 'sms' or requested == 'voice') then reason = 'country_not_allowed' else reason = 'method_disabled' end
  else method = requested end
else
  -- The default, else the first registered method the tenant allows; a method that failed the
  -- user lately (an undelivered SMS) gives way to another one while there is one, and push while it
  -- is suspended for the user to any other (a start naming push is denied push_suspended), also
  -- when this very start suspends it: push is looked at only once the order reaches it.
  local failed = {}
  local marks = redis.call('HGETALL', KEYS[11])
  for n = 1, #marks, 2 do if tonumber(marks[n + 1]) > tonumber(ARGV[5]) then failed[marks[n]] = true end end
  local function suspended(m) return m == 'push' and push_suspended() end
  local candidates = {}
  local d = u[4]
  if d and regset[d] then candidates[1] = d end
  for _, m in ipairs(registered) do if m ~= d then candidates[#candidates + 1] = m end end
  for _, m in ipairs(candidates) do if enabled[m] and not failed[m] and not suspended(m) then method = m; break end end
  if not method then for _, m in ipairs(candidates) do if enabled[m] and not suspended(m) then method = m; break end end end
  if not method then for _, m in ipairs(candidates) do if enabled[m] then method = m; break end end end
  if not method then
    if #registered == 0 then reason = 'no_method_registered' elseif phoneBlocked then reason = 'country_not_allowed' else reason = 'method_disabled' end
  end
end
-- Throttles, on what sends something: the client IP's starts (fraud counts them across users,
-- auth-challenge passes when its throttle ends), the phone number's sends across users (dispatch
-- counts them and copies the end into the slot of every user with that number), and the user's own
-- SMS and voice challenges: at most ARGV[10] in any ARGV[11] seconds (a sliding window: each send is
-- remembered by its challenge id until it leaves the window).
local now = tonumber(ARGV[5])
local function wait(untilMs) return tostring(math.max(1, math.ceil((untilMs - now) / 1000))) end
-- A start that suspended push while choosing another method, then throttled: push stays suspended
-- (the refusals were there), and the reply's fourth field says so, so that it is counted.
local function limited(untilMs, scope)
  if suspendedNow then return {'rate_limited', wait(untilMs), scope, '1'} end
  return {'rate_limited', wait(untilMs), scope}
end
if (method == 'sms' or method == 'voice' or method == 'push') and ARGV[24] ~= '' and tonumber(ARGV[24]) > now then
  return limited(tonumber(ARGV[24]), 'ip')
end
if method == 'sms' or method == 'voice' then
  local phoneUntil = tonumber(redis.call('GET', KEYS[12]) or '0')
  if phoneUntil > now then return limited(phoneUntil, 'phone') end
  local full = admit(KEYS[3], tonumber(ARGV[10]), tonumber(ARGV[11]) * 1000, now, ARGV[15])
  if full then return limited(full, 'user') end
end
-- Push, against MFA fatigue: push suspended for the user (too many denied or ignored pushes lately:
-- the IdP must use another method; push_suspended above); one pending push at a time (a push still
-- waiting answers rate_limited; one that expired unanswered was counted as ignored there); at most
-- ARGV[29] pushes in any ARGV[30] seconds. KEYS 13-16: the pending push, the push starts (window),
-- denied and ignored pushes (window), suspended until.
if method == 'push' then
  if push_suspended() then return deny('push_suspended', suspendedNow) end
  local window = tonumber(ARGV[30]) * 1000
  local pending = redis.call('GET', KEYS[13])
  if pending then
    local sep = string.find(pending, '|', 1, true)
    return {'rate_limited', wait(tonumber(string.sub(pending, sep + 1))), 'push'}
  end
  local full = admit(KEYS[14], tonumber(ARGV[29]), window, now, ARGV[15])
  if full then return {'rate_limited', wait(full), 'push'} end
  redis.call('SET', KEYS[13], ARGV[15] .. '|' .. ARGV[6], 'PX', tonumber(ARGV[6]) - now + window)
end
local status = 'registration_required'
if method then status = 'pending' end
local recorded = method or requested
redis.call('HSET', KEYS[2], 'tenantId', ARGV[1], 'userId', ARGV[2], 'method', recorded, 'status', status,
  'reason', reason or '', 'attempts', 0, 'maxAttempts', ARGV[7], 'expiresAt', ARGV[6], 'createdAt', ARGV[5], 'vf', u[13] or '')
if method == 'sms' then redis.call('HSET', KEYS[2], 'codeHash', ARGV[8]) end
-- A push is answered once in the app: the number's keyed hash, and one attempt (a wrong number denies).
if method == 'push' then redis.call('HSET', KEYS[2], 'codeHash', ARGV[28], 'maxAttempts', 1) end
if ARGV[17] ~= '' then redis.call('HSET', KEYS[2], 'ip', ARGV[17]) end
if ARGV[18] ~= '' then redis.call('HSET', KEYS[2], 'app', ARGV[18]) end
if ARGV[23] == '1' then redis.call('HSET', KEYS[2], 'rd', '1') end
-- A challenge that can never be verified (registration_required, including every start for an
-- unknown user id) is kept only for status queries right after it: made-up user ids cost little.
if method then redis.call('EXPIRE', KEYS[2], ARGV[9]) else redis.call('EXPIRE', KEYS[2], ${REGISTRATION_REQUIRED_TTL_SECONDS}) end
-- A pending challenge of another method because this start suspended push says so in its reply's
-- reason (not on the challenge: its status has none), so that the suspension is counted.
local replyReason = reason or ''
if status == 'pending' and suspendedNow then replyReason = 'push_suspended' end
local reply = kept({status, recorded, replyReason, u[5] or '', u[6] or '', u[7] or '', u[8] or '', u[9] or '', u[10] or ''})
-- A TOTP challenge: the user's masked tokens follow the reply (after KEEP: never in the outbox or
-- an event), so that the instance can check the code of its verify before its one script call.
if method == 'totp' then with_tokens(reply, KEYS[17], KEYS[18]) end
return reply
`;

// The two verify scripts share their KEYS and first ARGV:
//   KEYS: challenge, totp tokens, totp last steps, user's failed verifications (window),
//         user's consecutive failed verifications, the slot's outbox.
//   KEYS (cont.): the user's remembered browsers, when the user last completed MFA, the user's
//         block (fraud's projection), the user's projection.
//   ARGV: tenantId, now ms, lockout threshold, failure-counter window s, lockout duration s,
//         consecutive failures cap, challenge id, the request's context (JSON), the id of a new
//         remember token ('' = none) and the end of what an approval remembers (ms; 0 = the
//         tenant does not remember), then the script's own arguments.
// Every reply that records something (approved, rejected, exhausted, expired) is kept in the
// outbox (KEEP). Denials (rejected, exhausted, locked_out, expired) end with the challenge's
// client IP ('' = none): per-IP lockout counts them.
// checks() answers whatever needs no code: an unknown or finished challenge, a user locked out (no
// code is compared then, so starting new challenges buys no new guesses: the window lockout
// ends by itself, the consecutive cap only with an admin unlock), an
// expired challenge (recorded once), a user blocked since the start (the challenge denied and
// recorded once: a block denies every attempt, not only the next starts), a user reset or erased
// since the start (voided: the challenge denied method_not_registered, recorded once). onDenied
// runs before either denial is returned (the push answer's: the push no longer waits for the user).
/**
 * Whether a challenge that kept `vf` (its user's validFrom at its start) is void: the user hash now
 * holds another validFrom (a reset since, or an erasure and a new registration), or is a tombstone
 * (no userId: erased, or gone). '' (a challenge of an older start) and a hash without validFrom but
 * with its user (written by an older user-settings) void nothing.
 */
const VOIDED = `local function voided(userKey, vf)
  if (vf or '') == '' then return false end
  local u = redis.call('HMGET', userKey, 'validFrom', 'userId')
  if u[1] then return u[1] ~= vf end
  return not u[2]
end
`;

const checks = (outboxMax: number, onDenied = '') => `${KEEP('KEYS[6]', 'ARGV[7]', 'ARGV[8]', outboxMax)}${VOIDED}
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'reason', 'maxAttempts', 'expiresAt', 'codeHash', 'attempts', 'ip', 'rd', 'vf')
if not ch[1] or ch[1] ~= ARGV[1] then return {'not_found'} end
local userId, method, status, ip = ch[2], ch[3], ch[4], ch[10] or ''
if status ~= 'pending' then
  if status == 'denied' and ch[5] == 'expired' then return {'expired_again', userId, method} end
  return {'conflict', userId, method, status}
end
if tonumber(redis.call('GET', KEYS[5]) or '0') >= tonumber(ARGV[6]) then return {'capped'} end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[3]) then
  return {'locked', tostring(redis.call('TTL', KEYS[4]))}
end
-- The slot's outbox is full (KEEP): nothing is decided, compared or counted.
if outbox_full() then return {'outbox_full'} end
if tonumber(ARGV[2]) >= tonumber(ch[7]) then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'expired', 'completedAt', ARGV[2])
  return kept({'expired', userId, method, ip})
end
if redis.call('EXISTS', KEYS[9]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'user_blocked', 'completedAt', ARGV[2])${onDenied}
  return kept({'user_blocked', userId, method, ip})
end
-- The user's methods changed wholesale since the start: reset (users.reset), or erased (a tombstone
-- has no userId) and maybe registered again. A code sent to them, a call to their phone, proves
-- nothing now. A challenge started before its user hash carried validFrom ('') is not checked, nor
-- is a user hash written without it (an older user-settings, during an upgrade or after a rollback).
if voided(KEYS[10], ch[12]) then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'method_not_registered', 'completedAt', ARGV[2])${onDenied}
  return kept({'voided', userId, method, ip})
end
-- A pending challenge always has attempts left (the last one denies it); checked all the same.
local max = tonumber(ch[6])
if tonumber(ch[9] or '0') >= max then return {'conflict', userId, method, status} end
`;

// OUTCOME records the decision held in matched (and, for TOTP, tokenId/step; cause otherwise).
// A success spends the code (for TOTP: the step becomes the token's last accepted one) and
// resets both failure counters; a wrong code counts towards the attempts of the challenge, the
// window lockout and the consecutive cap. The wrong code that reaches the lockout threshold
// (the tenant's `lockout`) ends the challenge as `locked_out`.
const OUTCOME = `
if matched then
  if tokenId ~= '' then redis.call('HSET', KEYS[3], tokenId, step) end
  redis.call('HSET', KEYS[1], 'status', 'approved', 'reason', '', 'completedAt', ARGV[2])
  redis.call('DEL', KEYS[4], KEYS[5])
  -- A tenant that remembers (an end given): the time of this MFA, for its legacy clients, kept as
  -- long as it can matter (rememberMfa.days); and the browser, when the start asked and a token id
  -- is given (verify only: a push or call approval has no reply to the browser's IdP to carry a
  -- token): a new token's id with its end; ended ones are dropped, so the hash holds only browsers
  -- still remembered. At most ${REMEMBERED_BROWSERS_MAX} of them, the newest: each remembering approval
  -- reads them all, so a user approving from ever new browsers (or a script doing it for them) must
  -- not make that read, and the hash, grow without end. The oldest go first (the one remembered
  -- longest ago is the likeliest to be a browser no longer used); they are asked for MFA again.
  -- Only while the user is still the one the challenge was for: a challenge approved after its
  -- user was erased must not leave a user registered later under the same id a way past MFA.
  local remembered = ''
  local remembers = tonumber(ARGV[10]) > tonumber(ARGV[2]) and redis.call('HGET', KEYS[10], 'userId') == userId
  if remembers then redis.call('SET', KEYS[8], ARGV[2], 'PX', tonumber(ARGV[10]) - tonumber(ARGV[2])) end
  if remembers and ch[11] == '1' and ARGV[9] ~= '' then
    local all = redis.call('HGETALL', KEYS[7])
    local live = {}
    for n = 1, #all, 2 do
      if tonumber(string.match(all[n + 1], '^(%d+)')) <= tonumber(ARGV[2]) then redis.call('HDEL', KEYS[7], all[n])
      elseif all[n] ~= ARGV[9] then live[#live + 1] = {all[n], tonumber(string.match(all[n + 1], ':(%d+)$') or '0')} end
    end
    if #live >= ${REMEMBERED_BROWSERS_MAX} then
      -- Oldest first; two remembered in the same ms in the order of their ids, so every run agrees.
      table.sort(live, function(a, b) if a[2] ~= b[2] then return a[2] < b[2] end return a[1] < b[1] end)
      for n = 1, #live - ${REMEMBERED_BROWSERS_MAX} + 1 do redis.call('HDEL', KEYS[7], live[n][1]) end
    end
    redis.call('HSET', KEYS[7], ARGV[9], ARGV[10] .. ':' .. ARGV[2])
    if redis.call('PTTL', KEYS[7]) < tonumber(ARGV[10]) - tonumber(ARGV[2]) then redis.call('PEXPIREAT', KEYS[7], ARGV[10]) end
    remembered = '1'
  end
  return kept({'approved', userId, method, tokenId, remembered})
end
local fails = redis.call('INCR', KEYS[4])
if fails == 1 then redis.call('EXPIRE', KEYS[4], ARGV[4]) end
local lockedOut = fails >= tonumber(ARGV[3])
if lockedOut then redis.call('EXPIRE', KEYS[4], ARGV[5]) end
local consecutive = redis.call('INCR', KEYS[5])
-- The counters go into the event, so that a rebuild of Redis restores them from the log.
local guard = {tostring(fails), tostring(tonumber(ARGV[2]) + redis.call('PTTL', KEYS[4])), tostring(consecutive)}
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- The wrong code that locks the user out ends the challenge too: no code is checked while locked.
if lockedOut then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'locked_out', 'completedAt', ARGV[2])
  return kept({'locked_out', userId, method, tostring(attempts), cause, guard[1], guard[2], guard[3], ip})
end
if attempts >= max then
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'too_many_attempts', 'completedAt', ARGV[2])
  return kept({'exhausted', userId, method, tostring(attempts), cause, guard[1], guard[2], guard[3], ip})
end
return kept({'rejected', userId, method, tostring(attempts), tostring(max - attempts), cause, guard[1], guard[2], guard[3], ip})
`;

// TOTP_RECHECK: what auth-challenge found (tokenId, step; cause when no token matched) holds only
// if the token is still active and the step newer than its last accepted one (else the code
// counts as reused: another request spent it since). Sets matched.
const TOTP_RECHECK = `
local matched = false
if tokenId ~= '' then
  if redis.call('HEXISTS', KEYS[2], tokenId) == 0 then
    tokenId = ''; cause = 'mismatch'
  elseif tonumber(step) > tonumber(redis.call('HGET', KEYS[3], tokenId) or '-1') then
    matched = true
  else
    tokenId = ''; cause = 'reused'
  end
end
`;

/** Compares two keyed hashes in constant time (XOR accumulated over the whole digest). */
const CT_EQUAL = `local function ct_equal(a, b)
  if #a ~= #b then return false end
  local x, y, acc = {string.byte(a, 1, -1)}, {string.byte(b, 1, -1)}, 0
  for n = 1, #x do acc = bit.bor(acc, bit.bxor(x[n], y[n])) end
  return acc == 0
end`;

/**
 * verify. Own ARGV: the keyed hash of the presented code (never the code); then, when
 * auth-challenge checked a TOTP code itself with the tokens it holds from the challenge's start:
 * '1', the matching token's id ('' = none), its time step, the cause when none matched, and each
 * token it checked against as (tokenId, spec).
 * An SMS challenge is decided here: the stored hash is compared in constant time (XOR accumulate
 * over the whole digest), so an SMS verify is one round trip. A TOTP challenge is decided here too
 * when the tokens named are exactly the user's active ones (same ids, same specs): the outcome is
 * re-checked (TOTP_RECHECK) and recorded, one round trip. Otherwise (no outcome given, or the
 * tokens changed since the start) nothing changes: the script answers what auth-challenge needs
 * to check the code and record the outcome with verifyTotpScript,
 * {'totp', userId, tokenId, spec, last accepted step ('-1' if none), ...} for each active token
 * (WITH_TOKENS). Other replies: {'approved', userId, method, tokenId} | {'rejected', userId, method,
 * attempts, remaining, cause, ...guard, ip} | {'exhausted' or 'locked_out', userId, method, attempts, cause, ...guard, ip}
 * (guard: failures in the window, when the window or lockout ends in ms, failures in a row) | {'expired',
 * userId, method, ip} | {'expired_again', userId, method} | {'user_blocked', userId, method, ip}
 * | {'voided', userId, method, ip} | {'conflict', userId, method, status} | {'locked', retryAfterSeconds} | {'capped'} | {'not_found'}.
 */
export const verifyScript = (outboxMax: number) => `${checks(outboxMax)}${WITH_TOKENS}
-- A call (or a push) is answered on the phone, not with a code: nothing is compared or counted.
if method == 'voice' or method == 'push' then return {'elsewhere', userId, method} end
if method == 'totp' then
  -- The outcome auth-challenge found with the tokens it names holds only if they are still the
  -- user's tokens, each with the same spec: else it checks again with the current ones.
  local named = (#ARGV - 15) / 2
  local current = ARGV[12] == '1' and redis.call('HLEN', KEYS[2]) == named
  if current then
    for n = 16, #ARGV, 2 do
      if redis.call('HGET', KEYS[2], ARGV[n]) ~= ARGV[n + 1] then current = false; break end
    end
  end
  if not current then return with_tokens({'totp', userId}, KEYS[2], KEYS[3]) end
  local tokenId, step, cause = ARGV[13], ARGV[14], ARGV[15]
  ${TOTP_RECHECK}
  ${OUTCOME}
end
${CT_EQUAL}
local matched = method == 'sms' and ct_equal(ch[8] or '', ARGV[11])
local tokenId, step, cause = '', '', 'mismatch'
${OUTCOME}`;

/**
 * status: the challenge and, for the fallback of an undelivered challenge, the user's methods and
 * their phone's country (for the tenant's country rules) (one slot). KEYS: challenge, user. Returns
 * {tenantId, status, reason, expiresAt, method, delivery, methods csv, phone country} or {} for an
 * unknown challenge.
 */
export const STATUS_SCRIPT = `
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'status', 'reason', 'expiresAt', 'method', 'delivery')
if not ch[1] then return {} end
local u = {}
if ch[6] == 'failed' then u = redis.call('HMGET', KEYS[2], 'methods', 'phoneCountry') end
return {ch[1], ch[2] or '', ch[3] or '', ch[4] or '', ch[5] or '', ch[6] or '', u[1] or '', u[2] or ''}
`;

/**
 * The answer of a voice challenge's call (dispatch): # pressed, or a PIN checked right (own ARGV
 * '1'), or a wrong PIN ('0'), counted like a wrong code. Keys, arguments and replies as
 * verifyScript; the same checks first (an expired challenge, a user locked out).
 * ARGV[12]: the answer's id ('' or absent from an older dispatch: every request decides). dispatch
 * sends an answer again when it may not have been recorded (no reply, or `unavailable` from a
 * Redis connection that closed after the script ran): the decision an answer took is kept on the
 * challenge (`va`: its id, `vr`: the reply) and the same id gets that reply again, counting
 * nothing twice; the caller rebuilds the same event from it (same name, same event id). Only the
 * last decision is kept: a call's prompts are answered one after the other.
 */
export const voiceOutcomeScript = (outboxMax: number) => `
local answer = ARGV[12] or ''
if answer ~= '' then
  local last = redis.call('HMGET', KEYS[1], 'tenantId', 'va', 'vr')
  if last[1] == ARGV[1] and last[2] == answer and last[3] then return cjson.decode(last[3]) end
end
local function decide()
${checks(outboxMax)}
if method ~= 'voice' then return redis.error_reply('not a voice challenge') end
local matched = ARGV[11] == '1'
local tokenId, step, cause = '', '', 'mismatch'
${OUTCOME}
end
local reply = decide()
-- The replies that changed the challenge or the counters; the others (conflict, locked, capped,
-- not found) changed nothing, and the same answer may decide once they pass.
local decided = {approved = true, rejected = true, exhausted = true, locked_out = true, expired = true, user_blocked = true, voided = true}
if answer ~= '' and decided[reply[1]] then redis.call('HSET', KEYS[1], 'va', answer, 'vr', cjson.encode(reply)) end
return reply`;

/**
 * verify of a TOTP challenge, second call (after verifyScript answered the tokens): records what
 * auth-challenge found. Own ARGV: the id of the token whose code matched ('' = none), its RFC 6238
 * time step, and the cause when none did ('mismatch' or 'reused'). Everything is checked again
 * atomically, since other requests may have run since the first call: the challenge (still
 * pending, not expired, same tenant, attempts left), the lockouts, the token (still active) and
 * the replay guard (TOTP_RECHECK). Replies as verifyScript.
 */
export const verifyTotpScript = (outboxMax: number) => `${checks(outboxMax)}
if method ~= 'totp' then return redis.error_reply('not a totp challenge') end
local tokenId, step, cause = ARGV[11], ARGV[12], ARGV[13]
${TOTP_RECHECK}
${OUTCOME}`;

/**
 * resend: the code of a pending SMS challenge goes out again (dispatch reads it back from the
 * challenge's start event; Redis never had it). Counted like a start against the user's SMS and
 * voice sends (the same sliding window, one member per resend) and refused while the user's phone
 * number is throttled across users; at most ARGV[3] sends per challenge, the start's included, and
 * ARGV[4] ms at least since the last one. The same checks as a verify first (tenant, still pending
 * and unexpired, the lockouts, the user's block): a code that could not be checked is not worth
 * sending. Accepting a
 * resend clears a failed delivery (status reads pending again until the resend's own outcome).
 * The tenant's settings as they are now, not as they were at the start: SMS among its usable
 * methods (ARGV[11]) and its country rules for the user's phone (ARGV[12], [13], as at start).
 * KEYS: challenge, user's SMS and voice sends (window), user's failed verifications (window), user's
 * consecutive failed verifications, the user's phone number throttled until (dispatch), the slot's
 * outbox, the user's block (fraud), the user's projection.
 * ARGV: tenantId, now ms, max sends per challenge, min interval ms, user's max sends, user's window s,
 * lockout threshold, consecutive failures cap, challenge id, the request's context (JSON), '1' when
 * the tenant allows SMS, allowed countries ('*' = all, else a csv), blocked countries (csv).
 * Returns {'resent', userId, 'sms', resend number, resends remaining, expiresAt ms} (kept in the
 * outbox as "<challengeId>:resent:<n>") | {'not_found'} | {'conflict', 'method' | 'status', what it is}
 * | {'exhausted', max sends} | {'rate_limited', retryAfterSeconds, 'interval' | 'phone' | 'user'}
 * | {'locked', retryAfterSeconds} | {'capped'} | {'user_blocked'} (nothing changes: the challenge is
 * denied at its next verify) | {'not_allowed', 'method_disabled' | 'country_not_allowed'} | {'voided'} (the
 * user was reset or erased since the start: nothing is sent, the challenge is denied at its next verify).
 */
export const resendScript = (outboxMax: number) => `${KEEP('KEYS[6]', 'ARGV[9]', 'ARGV[10]', outboxMax, `reply[1] == 'resent'`)}${SLIDING_WINDOW}${COUNTRY_RULES}${VOIDED}
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'userId', 'method', 'status', 'expiresAt', 'createdAt', 'resends', 'resentAt', 'vf')
if not ch[1] or ch[1] ~= ARGV[1] then return {'not_found'} end
local now = tonumber(ARGV[2])
if ch[3] ~= 'sms' then return {'conflict', 'method', ch[3] or ''} end
if ch[4] ~= 'pending' then return {'conflict', 'status', ch[4] or ''} end
if now >= tonumber(ch[5]) then return {'conflict', 'status', 'expired'} end
if redis.call('EXISTS', KEYS[7]) == 1 then return {'user_blocked'} end
if voided(KEYS[8], ch[9]) then return {'voided'} end
if ARGV[11] ~= '1' then return {'not_allowed', 'method_disabled'} end
if (ARGV[12] ~= '*' or ARGV[13] ~= '') and country_excluded(redis.call('HGET', KEYS[8], 'phoneCountry') or '', ARGV[12], ARGV[13]) then
  return {'not_allowed', 'country_not_allowed'}
end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[8]) then return {'capped'} end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[7]) then
  return {'locked', tostring(redis.call('TTL', KEYS[3]))}
end
local resends = tonumber(ch[7] or '0')
if resends + 1 >= tonumber(ARGV[3]) then return {'exhausted', ARGV[3]} end
local function wait(untilMs) return tostring(math.max(1, math.ceil((untilMs - now) / 1000))) end
local nextAt = tonumber(ch[8] or ch[6]) + tonumber(ARGV[4])
if nextAt > now then return {'rate_limited', wait(nextAt), 'interval'} end
local phoneUntil = tonumber(redis.call('GET', KEYS[5]) or '0')
if phoneUntil > now then return {'rate_limited', wait(phoneUntil), 'phone'} end
-- The slot's outbox is full (KEEP): nothing is counted or sent.
if outbox_full() then return {'outbox_full'} end
local n = resends + 1
local full = admit(KEYS[2], tonumber(ARGV[5]), tonumber(ARGV[6]) * 1000, now, ARGV[9] .. ':r' .. n)
if full then return {'rate_limited', wait(full), 'user'} end
redis.call('HSET', KEYS[1], 'resends', n, 'resentAt', now)
redis.call('HDEL', KEYS[1], 'delivery')
return kept({'resent', ch[2], 'sms', tostring(n), tostring(tonumber(ARGV[3]) - 1 - n), ch[5]})
`;

/**
 * The answer of a push challenge from the user's device (the device API checked the device's
 * signatures): approve with the number the user typed (its keyed hash, ARGV[11]; compared in
 * constant time, a wrong one denies: one attempt), approve without a number (ARGV[11] = 'none':
 * right only for a push started without one, a RADIUS sign-in, whose `codeHash` is empty; a number
 * for such a push, or none for a push with one, is a wrong number), or deny (ARGV[11] = ''). Either way the push is
 * no longer pending for the user (also when a block denies it), and the device was used now. A denial, and a wrong number, count
 * towards push fatigue (KEYS[12]); a wrong number counts like a wrong code too. Keys and arguments
 * as verifyScript, then KEYS 11-14: the user's pending push, denied and ignored pushes, the devices'
 * last use, the user's devices (user-settings' projection); ARGV 11: the number's hash ('' = deny),
 * 12: the fatigue window s, 13: the device nonce (its field in KEYS 14 and 13, also for an app
 * activated under an earlier master key, whose id carries another tag).
 * The answer counts only while the device is still the user's: an app deleted after the device API
 * admitted its request, before this script ran, neither approves nor denies, and its use is not
 * recorded ({'device_removed'}, nothing changed: the device API answers it as it answers a deleted
 * app, 403 not_activated). A device nonce is never given again, so its field in the user's devices
 * is that device. What checks() decide comes first, as for any answer: a push expired, its user
 * blocked, or reset or erased since its start (which takes the devices too), is denied as before
 * (decisions any verify of the challenge takes too, whoever sends it).
 * Replies as verifyScript, and {'denied_by_user', userId, method, ip} | {'not_push', userId, method}
 * | {'device_removed'}.
 */
// The push no longer waits for the user (the marker, if it still names this challenge, goes).
const END_PENDING_PUSH = `
local pending = redis.call('GET', KEYS[11])
if pending and string.sub(pending, 1, #ARGV[7] + 1) == ARGV[7] .. '|' then redis.call('DEL', KEYS[11]) end`;
export const pushAnswerScript = (outboxMax: number) => `${checks(outboxMax, END_PENDING_PUSH)}
if method ~= 'push' then return {'not_push', userId, method} end
if redis.call('HEXISTS', KEYS[14], ARGV[13]) == 0 then return {'device_removed'} end
${CT_EQUAL}${END_PENDING_PUSH}
redis.call('HSET', KEYS[13], ARGV[13], ARGV[2])
local function refused()
  redis.call('ZADD', KEYS[12], ARGV[2], ARGV[7])
  redis.call('PEXPIRE', KEYS[12], tonumber(ARGV[12]) * 1000)
end
if ARGV[11] == '' then
  refused()
  redis.call('HSET', KEYS[1], 'status', 'denied', 'reason', 'denied_by_user', 'completedAt', ARGV[2])
  return kept({'denied_by_user', userId, method, ip})
end
local matched
if (ch[8] or '') == '' then matched = ARGV[11] == 'none' else matched = ct_equal(ch[8], ARGV[11]) end
if not matched then refused() end
local tokenId, step, cause = '', '', 'mismatch'
${OUTCOME}`;

/**
 * The device API's pending read (DeviceApiService.pending): the push the device's user is waiting
 * on, with what decides whether they can still approve it, in one call that changes nothing. KEYS:
 * the challenge, the user's block (fraud's projection), the user's projection (one slot). Returns
 * the challenge's tenantId, status, method, expiresAt, createdAt, ip, app and codeHash (nil where
 * the record has none), then '1' when its user can no longer approve it, '0' otherwise: the user is
 * blocked, or reset or erased since its start by VOIDED, the very rule by which the verify scripts'
 * checks() deny its answer (user_blocked, method_not_registered), so that the app never shows a push
 * whose approval would be refused, nor hides one that could still be approved.
 */
export const PENDING_PUSH_SCRIPT = `${VOIDED}
local ch = redis.call('HMGET', KEYS[1], 'tenantId', 'status', 'method', 'expiresAt', 'createdAt', 'ip', 'app', 'codeHash', 'vf')
local void = '0'
if ch[1] and (redis.call('EXISTS', KEYS[2]) == 1 or voided(KEYS[3], ch[9])) then void = '1' end
return {ch[1], ch[2], ch[3], ch[4], ch[5], ch[6], ch[7], ch[8], void}
`;
