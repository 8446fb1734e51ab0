-- wrk script: POST a body template, filling `{{ID}}` with an identifier unique to this
-- request (so Hearth does not treat repeats as replays) and `{{MRN}}` with a random
-- seeded tenant's MRN. Environment: TEMPLATE (file), TENANTS (count), RUN (unique per
-- run), TOKEN (bearer token).
local template_file = os.getenv("TEMPLATE")
local tenants = tonumber(os.getenv("TENANTS") or "10000")
local run = os.getenv("RUN") or tostring(os.time())
local token = os.getenv("TOKEN") or ""

local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local parts, slots = {}, {}
local counter = 0

function init(args)
  local f = assert(io.open(template_file, "rb"))
  local t = f:read("*a")
  f:close()
  local pos = 1
  while true do
    local s, e, name = string.find(t, "{{(%u+)}}", pos)
    if not s then
      table.insert(parts, string.sub(t, pos))
      break
    end
    table.insert(parts, string.sub(t, pos, s - 1))
    table.insert(slots, name)
    pos = e + 1
  end
  math.randomseed(os.time() * 1000 + (tid or 0))
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/fhir+json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local id = run .. "-" .. (tid or 0) .. "-" .. counter
  local mrn = "MRN-" .. math.random(tenants)
  local buf = {}
  for i = 1, #slots do
    buf[#buf + 1] = parts[i]
    if slots[i] == "ID" then buf[#buf + 1] = id else buf[#buf + 1] = mrn end
  end
  buf[#buf + 1] = parts[#parts]
  return wrk.format(nil, nil, nil, table.concat(buf))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d non2xx=%d sockerr=%d bytes=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect + e.read + e.write + e.timeout, summary.bytes))
end
