-- Releases leases so the entries are due again at their execute_after.
--
-- KEYS[i]  the index of entry i
-- ARGV[1]  key prefix of the namespace
-- ARGV[2 * i], ARGV[2 * i + 1]   entry i: name, lease token
-- Returns one flag per entry: 1 released, 0 the lease was not held.

local prefix = ARGV[1]
local done = {}
for i, key in ipairs(KEYS) do
    local name, token = ARGV[2 * i], ARGV[2 * i + 1]
    local entry = prefix .. 'e:' .. name
    local fields = redis.call('hmget', entry, 'ea', 'lb')
    if fields[1] and fields[2] == token then
        redis.call('hdel', entry, 'lu', 'lb')
        redis.call('zadd', key, fields[1], name)
        done[i] = 1
    else
        done[i] = 0
    end
end
return done
