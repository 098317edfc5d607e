-- Moves leased entries to their next time (or deletes them), if the lease is still theirs.
--
-- KEYS     the index keys involved (ARGV[1] .. 'i:' .. PARENT)
-- ARGV[1]  key prefix of the namespace
-- ARGV[2]  JSON: [[key number, entry name, lease token, next execute_after (microseconds as a
--          string; '' deletes the entry)], ...]
-- A deleted entry also leaves the name list of its parent (ARGV[1] .. 'n:' .. PARENT).
-- Returns a string with one character per entry: '1' committed, '0' the lease was not held.
-- Index updates are collected and sent as one ZADD/ZREM per key.

local prefix = ARGV[1]
local done = {}
local moved, removed, deleted = {}, {}, {}
for i, item in ipairs(cjson.decode(ARGV[2])) do
    local k, name, token, next_at = item[1], item[2], item[3], item[4]
    local entry = prefix .. 'e:' .. name
    if redis.call('hget', entry, 'lb') == token then
        if next_at == '' then
            deleted[#deleted + 1] = entry
            removed[k] = removed[k] or {}
            table.insert(removed[k], name)
        else
            redis.call('hset', entry, 'ea', next_at)
            redis.call('hdel', entry, 'lu', 'lb')
            moved[k] = moved[k] or {}
            table.insert(moved[k], next_at)
            table.insert(moved[k], name)
        end
        done[i] = '1'
    else
        done[i] = '0'
    end
end
-- unpack() takes at most a few thousand values: send big batches in chunks.
local function chunked(command, key, values, step)
    for first = 1, #values, step do
        redis.call(command, key, unpack(values, first, math.min(first + step - 1, #values)))
    end
end
if #deleted > 0 then
    for first = 1, #deleted, 1000 do
        redis.call('del', unpack(deleted, first, math.min(first + 999, #deleted)))
    end
end
for k, names in pairs(removed) do
    chunked('zrem', KEYS[k], names, 1000)
    chunked('zrem', prefix .. 'n:' .. string.sub(KEYS[k], #prefix + 3), names, 1000)
end
for k, values in pairs(moved) do
    chunked('zadd', KEYS[k], values, 1000)
end
return table.concat(done)
