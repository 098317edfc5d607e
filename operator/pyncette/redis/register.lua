-- Creates, updates or deletes dynamic task instances, all or nothing.
--
-- KEYS[i]  the index of instance i (ARGV[1] .. 'i:' .. PARENT); every instance is also listed by
--          name (score 0) in ARGV[1] .. 'n:' .. PARENT, which list.lua pages through.
-- ARGV[1]  key prefix of the namespace     ARGV[2]  now (microseconds)     ARGV[3]  '1' to force
-- ARGV[#ARGV]  the PARKED marker: an entry leased by it (quarantined) is replaced as with force
-- ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
--          instance i: name, execute_after (microseconds; '' = no future run: delete it),
--          spec (JSON), lease duration (microseconds)
--
-- Without force, if any instance is leased nothing is written and {i, locked_until} of the first
-- such instance is returned. Otherwise: a new instance is created as given; an existing one gets the
-- new spec and the sooner of its old and new execute_after (its lease fields, if expired, are kept);
-- with force it is overwritten and its lease dropped. Returns {} then.

local prefix, now, force, parked = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1', ARGV[#ARGV]

if not force then
    for i = 1, #KEYS do
        local fields = redis.call('hmget', prefix .. 'e:' .. ARGV[4 * i], 'lu', 'lb')
        local locked_until = fields[1]
        if locked_until and tonumber(locked_until) and tonumber(locked_until) > now and fields[2] ~= parked then
            return {i, locked_until}
        end
    end
end

for i, key in ipairs(KEYS) do
    local name, execute_after, spec, duration = ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2], ARGV[4 * i + 3]
    local entry = prefix .. 'e:' .. name
    local names = prefix .. 'n:' .. string.sub(key, #prefix + 3)
    local fields = redis.call('hmget', entry, 'ea', 'lu', 'lb')
    local old_at, locked_until = fields[1], fields[2]
    -- A quarantined entry (parked, or with a stored time that is not a number) is replaced outright.
    local replace = force or fields[3] == parked or (old_at and not tonumber(old_at))
    if execute_after == '' then
        redis.call('del', entry)
        redis.call('zrem', key, name)
        redis.call('zrem', names, name)
    elseif not old_at or replace then
        redis.call('zadd', names, 0, name)
        redis.call('hset', entry, 'ea', execute_after, 'spec', spec, 'ld', duration)
        redis.call('hdel', entry, 'lu', 'lb')
        redis.call('zadd', key, execute_after, name)
    else
        if tonumber(old_at) < tonumber(execute_after) then
            execute_after = old_at
        end
        redis.call('hset', entry, 'ea', execute_after, 'spec', spec, 'ld', duration)
        local score = tonumber(execute_after)
        if locked_until and tonumber(locked_until) and tonumber(locked_until) > score then
            score = tonumber(locked_until)
        end
        redis.call('zadd', key, string.format('%d', score), name)
    end
end
return {}
