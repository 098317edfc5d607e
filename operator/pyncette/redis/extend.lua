-- Extends leases that are still held.
--
-- KEYS[i]  the index of entry i
-- ARGV[1]  key prefix of the namespace
-- ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]   entry i: name, lease token, new locked_until
--                                                  (microseconds)
-- Returns one flag per entry: 1 extended, 0 the lease was lost.

local prefix = ARGV[1]
local done = {}
for i, key in ipairs(KEYS) do
    local name, token, locked_until = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
    local entry = prefix .. 'e:' .. name
    local fields = redis.call('hmget', entry, 'ea', 'lb')
    if fields[1] and fields[2] == token then
        redis.call('hset', entry, 'lu', locked_until)
        local score = math.max(tonumber(fields[1]), tonumber(locked_until))
        redis.call('zadd', key, string.format('%d', score), name)
        done[i] = 1
    else
        done[i] = 0
    end
end
return done
