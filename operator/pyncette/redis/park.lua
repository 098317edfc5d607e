-- Hands quarantined entries leased by lease.lua over to the PARKED marker (see pyncette.repository.kit):
-- they stay leased until the same time, but by nobody, so registering them again replaces them.
--
-- ARGV[1]  key prefix of the namespace   ARGV[2]  the lease token they were leased with
-- ARGV[3]  the PARKED marker             ARGV[4...]  entry names
-- An entry changed meanwhile (its token is no longer ours, or it was deleted) is left alone.

local prefix, token, parked = ARGV[1], ARGV[2], ARGV[3]
for i = 4, #ARGV do
    local entry = prefix .. 'e:' .. ARGV[i]
    if redis.call('hget', entry, 'lb') == token then
        redis.call('hset', entry, 'lb', parked)
    end
end
return 0
