-- Moves leased entries to their next time (or deletes them), if the lease is still theirs.
--
-- KEYS[i]  the index of entry i
-- ARGV[1]  key prefix of the namespace
-- ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]   entry i: name, lease token, next execute_after
--                                                  (microseconds; '' deletes the entry)
-- Index keys are ARGV[1] .. 'i:' .. PARENT; a deleted entry also leaves the name list of its parent
-- (ARGV[1] .. 'n:' .. PARENT).
-- Returns one flag per entry: 1 committed, 0 the lease was not held (nothing changed).

local prefix = ARGV[1]
local done = {}
for i, key in ipairs(KEYS) do
    local name, token, next_at = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
    local entry = prefix .. 'e:' .. name
    if redis.call('hget', entry, 'lb') == token then
        if next_at == '' then
            redis.call('del', entry)
            redis.call('zrem', key, name)
            redis.call('zrem', prefix .. 'n:' .. string.sub(key, #prefix + 3), name)
        else
            redis.call('hset', entry, 'ea', next_at)
            redis.call('hdel', entry, 'lu', 'lb')
            redis.call('zadd', key, next_at, name)
        end
        done[i] = 1
    else
        done[i] = 0
    end
end
return done
