-- bench/cache/zipf.lua: wrk requests GET /items/{id} with Zipf-distributed ids.
--
--   wrk -t2 -c32 -d10s --latency -H "Authorization: Bearer $TOKEN" \
--       -s bench/cache/zipf.lua http://127.0.0.1:18200 -- 1000 1.1
--
-- Arguments (after --): n (ids 1..n, default 1000), s (the exponent,
-- default 1.1), and optionally "sweep" to request 1..n in order instead
-- (used to warm every key). Id k is drawn with probability k^-s / H(n, s):
-- the CDF is computed once per thread and sampled per request by binary
-- search. No response() callback: it would make wrk parse every response's
-- headers in Lua and cost the load generator CPU the server needs.

local threads = 0

function setup(thread)
	threads = threads + 1
	thread:set("thread_id", threads)
end

local n, cdf, sweep, next_id

function init(args)
	n = tonumber(args[1]) or 1000
	local s = tonumber(args[2]) or 1.1
	sweep = args[3] == "sweep"
	cdf = {}
	local sum = 0
	for k = 1, n do
		sum = sum + k ^ -s
		cdf[k] = sum
	end
	for k = 1, n do
		cdf[k] = cdf[k] / sum
	end
	cdf[n] = 1
	-- Threads share the clock: the thread id keeps their sequences apart.
	local id = tonumber(thread_id) or 0
	math.randomseed(os.time() * 1000 + id)
	next_id = id
end

-- sample returns the smallest k with cdf[k] >= u for a uniform u.
local function sample()
	local u = math.random()
	local lo, hi = 1, n
	while lo < hi do
		local mid = math.floor((lo + hi) / 2)
		if cdf[mid] < u then
			lo = mid + 1
		else
			hi = mid
		end
	end
	return lo
end

function request()
	local id
	if sweep then
		id = next_id % n + 1
		next_id = next_id + 1
	else
		id = sample()
	end
	return wrk.format(nil, "/items/" .. id)
end
