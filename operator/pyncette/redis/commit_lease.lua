-- Commits finished executions and leases the next due entries in one call (one round trip per batch
-- instead of two). The client prepends commit.lua and lease.lua, each wrapped as a function of its
-- own KEYS and ARGV (commit(KEYS, ARGV), lease(KEYS, ARGV)); this part splits the call's keys and
-- arguments between them and runs the commit first.
--
-- ARGV[1]  how many of KEYS belong to the lease (the rest belong to the commit)
-- ARGV[2]  how many of the following arguments belong to the lease (the rest belong to the commit)
-- Returns lease.lua's two bulk strings, then commit.lua's string of '1'/'0' flags.

local lease_key_count, lease_arg_count = tonumber(ARGV[1]), tonumber(ARGV[2])
local lease_keys, commit_keys, lease_args, commit_args = {}, {}, {}, {}
for i = 1, #KEYS do
    if i <= lease_key_count then
        lease_keys[#lease_keys + 1] = KEYS[i]
    else
        commit_keys[#commit_keys + 1] = KEYS[i]
    end
end
for i = 3, #ARGV do
    if i - 2 <= lease_arg_count then
        lease_args[#lease_args + 1] = ARGV[i]
    else
        commit_args[#commit_args + 1] = ARGV[i]
    end
end
local flags = commit(commit_keys, commit_args)
local reply = lease(lease_keys, lease_args)
reply[3] = flags
return reply
