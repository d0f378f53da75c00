-- wrk script for scripts/load-test: the request body from BODY_FILE, and, when TOKENS_FILE is set, a fresh
-- JWT per request (the service refuses a replayed jti), each wrk thread taking its own share of the tokens.
local body_file = os.getenv("BODY_FILE") or ""
local tokens_file = os.getenv("TOKENS_FILE") or ""
local threads = tonumber(os.getenv("THREADS") or "1")
local body = nil
if body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  body = f:read("*a")
  f:close()
end

local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
end

local tokens = {}
local counter = 1
function init(args)
  if tokens_file ~= "" then
    local n = 0
    for line in io.lines(tokens_file) do
      if n % threads == id then
        table.insert(tokens, line)
      end
      n = n + 1
    end
  end
  if body then
    wrk.method = "POST"
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
  end
end

function request()
  if #tokens > 0 then
    local token = tokens[counter] or "exhausted"
    counter = counter + 1
    return wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }, nil)
  end
  return wrk.format()
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format("RESULT %.0f %.2f %.2f %d %d\n", summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, failed, summary.requests))
end
