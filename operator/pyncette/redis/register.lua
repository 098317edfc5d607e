-- Creates or updates dynamic task instances.
--
-- KEYS[i]  the index of instance i
-- ARGV[1]  key prefix of the namespace     ARGV[2]  now (microseconds)     ARGV[3]  '1' to force
-- ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
--          instance i: name, execute_after (microseconds), spec (JSON), lease duration (microseconds)
--
-- Index keys are ARGV[1] .. 'i:' .. PARENT; every instance is also listed by name (score 0) in
-- ARGV[1] .. 'n:' .. PARENT, which list.lua pages through.
-- A new instance is created as given. An existing one is overwritten (lease dropped) when forced;
-- otherwise, if it is leased it is left alone and reported, else its spec is replaced and the
-- sooner of the old and new execute_after is kept (its lease fields, if expired, are kept too).
-- Returns {{i, locked_until}...} for the instances that were left alone because they are leased.

local prefix, now, force = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local locked = {}
for i, key in ipairs(KEYS) do
    local name, execute_after, spec, duration = ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
    local entry = prefix .. 'e:' .. name
    local fields = redis.call('hmget', entry, 'ea', 'lu')
    local old_at, locked_until = fields[1], fields[2]
    if not old_at or force then
        redis.call('zadd', prefix .. 'n:' .. string.sub(key, #prefix + 3), 0, name)
        redis.call('hset', entry, 'ea', execute_after, 'spec', spec, 'ld', duration)
        redis.call('hdel', entry, 'lu', 'lb')
        redis.call('zadd', key, execute_after, name)
    elseif locked_until and tonumber(locked_until) > now then
        locked[#locked + 1] = {i, locked_until}
    else
        if tonumber(old_at) < tonumber(execute_after) then
            execute_after = old_at
        end
        redis.call('hset', entry, 'ea', execute_after, 'spec', spec, 'ld', duration)
        local score = tonumber(execute_after)
        if locked_until and tonumber(locked_until) > score then
            score = tonumber(locked_until)
        end
        redis.call('zadd', key, string.format('%d', score), name)
    end
end
return locked
