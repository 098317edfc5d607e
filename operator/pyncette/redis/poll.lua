-- Checks one entry and leases it if it is due (the pyncette 1.x single-entry protocol).
--
-- KEYS[1]  the entry's index
-- ARGV[1]  key prefix of the namespace   ARGV[2]  entry name   ARGV[3]  now (microseconds)
-- ARGV[4]  execute_after to create a missing static entry with ('' for dynamic instances)
-- ARGV[5]  the caller's lease token ('' if none)    ARGV[6]  a fresh lease token
-- ARGV[7]  default lease duration (microseconds)
-- Returns {result, execute_after, lease token}; result is MISSING, LOCKED, PENDING or READY.

local prefix, name, now, initial = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local held, fresh = ARGV[5], ARGV[6]
local entry = prefix .. 'e:' .. name
local fields = redis.call('hmget', entry, 'ea', 'lu', 'lb', 'ld')
local execute_after, locked_until, locked_by = fields[1], fields[2], fields[3]

if not execute_after then
    if initial == '' then
        return {'MISSING', '', ''}
    end
    execute_after, locked_until, locked_by = initial, false, false
    redis.call('hset', entry, 'ea', execute_after)
    redis.call('zadd', KEYS[1], execute_after, name)
end

local ours = held ~= '' and locked_by == held
if locked_until and tonumber(locked_until) > now and not ours then
    return {'LOCKED', execute_after, ''}
end
if tonumber(execute_after) > now then
    return {'PENDING', execute_after, ''}
end
local token = ours and held or fresh
local new_until = string.format('%d', now + (tonumber(fields[4]) or tonumber(ARGV[7])))
redis.call('hset', entry, 'lu', new_until, 'lb', token)
redis.call('zadd', KEYS[1], new_until, name)
return {'READY', execute_after, token}
