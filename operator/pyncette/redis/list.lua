-- One page of a dynamic task's instances, in name order (stable while instances come and go).
--
-- KEYS[1]  the name list of the template (score 0, member: entry name)
-- ARGV[1]  key prefix of the namespace    ARGV[2]  page size
-- ARGV[3]  the last name of the previous page ('' for the first page)
-- Returns {has_more, {name, execute_after, locked_until or '', locked_by or '', spec}...}

local prefix, limit, after = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local start = after == '' and '-' or '(' .. after
local names = redis.call('zrangebylex', KEYS[1], start, '+', 'LIMIT', 0, limit + 1)
local result = {#names > limit and 1 or 0}
for i = 1, math.min(limit, #names) do
    local fields = redis.call('hmget', prefix .. 'e:' .. names[i], 'ea', 'lu', 'lb', 'spec')
    if fields[1] then
        result[#result + 1] = {names[i], fields[1], fields[2] or '', fields[3] or '', fields[4] or ''}
    end
end
return result
