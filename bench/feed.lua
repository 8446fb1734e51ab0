-- wrk script: read the housing updates feed in pages of 100 from random cursors between
-- MINSEQ and MAXSEQ (so every page is full, and of the entries above MINSEQ: the seeded
-- consents' own entries lie below it). Environment: MINSEQ, MAXSEQ, TOKEN.
local minseq = tonumber(os.getenv("MINSEQ") or "0")
local maxseq = tonumber(os.getenv("MAXSEQ") or "100")
local token = os.getenv("TOKEN") or ""

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
  wrk.method = "GET"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  local since = math.random(minseq, math.max(maxseq - 100, minseq))
  return wrk.format(nil, "/housing/updates?since=" .. since .. "&limit=100")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d sockerr=%d bytes=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout, summary.bytes))
end
