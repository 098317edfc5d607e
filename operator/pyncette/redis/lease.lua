-- Leases the due entries of several tasks in one call, earliest-due first.
--
-- KEYS[i]  the index of task i: a sorted set of entry names scored by when they are next due
--          (execute_after, or the end of the current lease if that is later), in microseconds.
-- ARGV[1]  key prefix of the namespace (the hash of entry NAME is ARGV[1] .. 'e:' .. NAME)
-- ARGV[2]  now (microseconds)      ARGV[3]  limit      ARGV[4]  lease token
-- ARGV[5 + 3 * (i - 1)] ...        for task i: static entry name ('' for a dynamic template),
--                                  execute_after to create a missing static entry with ('' = do not
--                                  create), default lease duration (microseconds)
--
-- Every returned entry is locked by the token until now + its lease duration; the caller moves
-- AT_MOST_ONCE entries forward with commit.lua before running them.
-- Returns two bulk strings (two bulk replies decode much faster than nested arrays):
--   1. JSON: [has_more (0/1), next_due ('' if none), [indexes of static tasks whose entry is missing],
--      [[task index, entry name, execute_after, byte length of its spec or -1 if none], ...]]
--   2. the specs of those rows, as stored, one after the other (the lengths above cut them apart).
-- Specs are passed through untouched (no cjson escaping here, no second JSON decoding in the
-- caller), and a spec edited by hand can only spoil its own row, never the reply.
-- Times stay strings: cjson would print large numbers with 14 significant digits.

local prefix, now, limit, token = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

-- With many tasks (partitions), each contributes at most a fair share (twice limit / #KEYS, at least
-- 8) instead of limit entries: ordering across tasks becomes approximate, reads stay O(limit).
local share = limit
if #KEYS > 2 then
    share = math.min(limit, math.max(math.ceil(2 * limit / #KEYS), 8))
end
local candidates = {}
local missing = {}
local more_in_some_task = false
for i, key in ipairs(KEYS) do
    local base = 4 + 3 * (i - 1)
    local static_name, initial = ARGV[base + 1], ARGV[base + 2]
    if static_name ~= '' and redis.call('exists', prefix .. 'e:' .. static_name) == 0 then
        if initial ~= '' then
            redis.call('hset', prefix .. 'e:' .. static_name, 'ea', initial)
            redis.call('zadd', key, initial, static_name)
        else
            missing[#missing + 1] = i
        end
    end
    local due = redis.call('zrangebyscore', key, '-inf', now, 'WITHSCORES', 'LIMIT', 0, share + 1)
    if #due > 2 * share then
        more_in_some_task = true
    end
    for j = 1, #due, 2 do
        candidates[#candidates + 1] = {tonumber(due[j + 1]), i, due[j]}
    end
end

if #KEYS > 1 then
    table.sort(candidates, function(a, b) return a[1] < b[1] end)
end

local rows = {}
local specs = {}
local rescored = {}  -- per task index: flat {score, name, ...} for one ZADD per index
for c = 1, math.min(limit, #candidates) do
    local i, name = candidates[c][2], candidates[c][3]
    local entry = prefix .. 'e:' .. name
    local fields = redis.call('hmget', entry, 'ea', 'ld', 'spec')
    if not fields[1] then
        -- An index member without its entry (deleted behind our back): drop it.
        redis.call('zrem', KEYS[i], name)
    else
        local duration = tonumber(fields[2]) or tonumber(ARGV[4 + 3 * (i - 1) + 3])
        local locked_until = string.format('%d', now + duration)
        redis.call('hset', entry, 'lu', locked_until, 'lb', token)
        local pairs_ = rescored[i]
        if pairs_ == nil then
            pairs_ = {}
            rescored[i] = pairs_
        end
        pairs_[#pairs_ + 1] = locked_until
        pairs_[#pairs_ + 1] = name
        -- The time goes back as a JSON string (parsed by the caller), so a stored value edited by
        -- hand spoils that row only, never the whole reply.
        local length = -1
        if fields[3] then
            length = #fields[3]
            specs[#specs + 1] = fields[3]
        end
        rows[#rows + 1] = '[' .. i .. ',' .. cjson.encode(name) .. ',' .. cjson.encode(fields[1]) .. ',' .. length .. ']'
    end
end
for i, pairs_ in pairs(rescored) do
    -- unpack() takes at most a few thousand values: big batches go in chunks.
    for first = 1, #pairs_, 1000 do
        redis.call('zadd', KEYS[i], unpack(pairs_, first, math.min(first + 999, #pairs_)))
    end
end

local next_due
for _, key in ipairs(KEYS) do
    local first = redis.call('zrange', key, 0, 0, 'WITHSCORES')
    if first[2] then
        local score = tonumber(first[2])
        if next_due == nil or score < next_due then
            next_due = score
        end
    end
end
local has_more = (#candidates > limit or more_in_some_task) and 1 or 0
local next_text = next_due ~= nil and string.format('%d', next_due) or ''
-- Empty Lua tables would encode as {}: send a bare [] instead.
local function array(t)
    return #t == 0 and '[]' or cjson.encode(t)
end
local header = '[' .. has_more .. ',"' .. next_text .. '",' .. array(missing) .. ',[' .. table.concat(rows, ',') .. ']]'
return {header, table.concat(specs)}
