//! The Lua scripts behind every lock operation.
//!
//! Each operation is one script, so it is atomic on the server (Redis runs a
//! script to completion before any other command). Both keys of a namespace
//! share a hash tag, so a script's keys always live in one slot and the
//! scripts also run on Redis Cluster.
//!
//! Every script first checks the types of the keys it touches and answers
//! `{'malformed', key, detail}` instead of letting a command fail on a key of
//! the wrong type: the Rust side turns that into a `LockError::Malformed`
//! naming the key. Other answers start with a status word the Rust side
//! matches on (`acquired`, `held`, `ok`, `lost`, `none`, `removed`).

use std::sync::LazyLock;

use redis::Script;

/// Shared prelude: `check(lock, counter)` returns a malformed answer, or
/// `nil` and the lock key's type. `counter` may be `nil`.
macro_rules! prelude {
    () => {
        r#"
local function check(lock, counter)
  local t = redis.call('TYPE', lock)['ok']
  if t ~= 'none' and t ~= 'hash' then
    return {'malformed', lock, 'holds a ' .. t .. ', not a lock record (a hash with owner and token)'}, t
  end
  if counter then
    local ct = redis.call('TYPE', counter)['ok']
    if ct ~= 'none' and ct ~= 'string' then
      return {'malformed', counter, 'holds a ' .. ct .. ', not a token counter (an integer string)'}, t
    end
    if ct == 'string' then
      local v = redis.call('GET', counter)
      if not string.match(v, '^%d+$') or #v > 18 then
        return {'malformed', counter, 'holds "' .. string.sub(v, 1, 64) .. '", not a token counter (an integer string)'}, t
      end
    end
  end
  return nil, t
end
"#
    };
}

/// KEYS: lock, counter. ARGV: owner, lease in ms.
/// Takes the lock when it is absent or already `owner`'s, with a new token
/// from the counter; otherwise reports the holder and its remaining PTTL.
const ACQUIRE: &str = concat!(
    prelude!(),
    r#"
local bad, t = check(KEYS[1], KEYS[2])
if bad then return bad end
if t == 'hash' then
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if owner ~= ARGV[1] then
    return {'held', owner, redis.call('HGET', KEYS[1], 'token'), redis.call('PTTL', KEYS[1])}
  end
end
local token = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'acquired', token}
"#
);

/// KEYS: lock. ARGV: owner, token, lease in ms.
const EXTEND: &str = concat!(
    prelude!(),
    r#"
local bad, t = check(KEYS[1], nil)
if bad then return bad end
if t == 'none' then return {'lost'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local token = redis.call('HGET', KEYS[1], 'token')
if owner == ARGV[1] and token == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'ok'}
end
return {'lost', owner, token}
"#
);

/// KEYS: lock. ARGV: owner, token.
const RELEASE: &str = concat!(
    prelude!(),
    r#"
local bad, t = check(KEYS[1], nil)
if bad then return bad end
if t == 'none' then return {'lost'} end
local owner = redis.call('HGET', KEYS[1], 'owner')
local token = redis.call('HGET', KEYS[1], 'token')
if owner == ARGV[1] and token == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return {'ok'}
end
return {'lost', owner, token}
"#
);

/// KEYS: lock. Reads the holder.
const INSPECT: &str = concat!(
    prelude!(),
    r#"
local bad, t = check(KEYS[1], nil)
if bad then return bad end
if t == 'none' then return {'none'} end
return {'held', redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'token'), redis.call('PTTL', KEYS[1])}
"#
);

/// KEYS: lock. Removes the lock record whoever holds it (never the counter)
/// and returns what it removed. A key of another type is left alone.
const FORCE_RELEASE: &str = concat!(
    prelude!(),
    r#"
local bad, t = check(KEYS[1], nil)
if bad then return bad end
if t == 'none' then return {'none'} end
local out = {'removed', redis.call('HGET', KEYS[1], 'owner'), redis.call('HGET', KEYS[1], 'token'), redis.call('PTTL', KEYS[1])}
redis.call('DEL', KEYS[1])
return out
"#
);

/// The compiled scripts (their SHA1 is computed once per process).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) acquire: Script,
    pub(crate) extend: Script,
    pub(crate) release: Script,
    pub(crate) inspect: Script,
    pub(crate) force_release: Script,
}

pub(crate) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    acquire: Script::new(ACQUIRE),
    extend: Script::new(EXTEND),
    release: Script::new(RELEASE),
    inspect: Script::new(INSPECT),
    force_release: Script::new(FORCE_RELEASE),
});
