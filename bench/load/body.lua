-- body.lua: POST JSON request bodies to one modeld endpoint, for wrk.
--
--   wrk -t2 -c32 -d10s --latency -s bench/load/body.lua \
--       http://127.0.0.1:8080/v1/models/fashion/classify -- /tmp/modeld-load/classify.jsonl
--
-- The file (the script's one argument) holds one JSON body per line
-- (bench/load/prepare.py writes them).  Each thread POSTs them round robin;
-- the threads start at different offsets so that, at any moment, they are not
-- all sending the same body (same image size, same sentence length).
--
-- After wrk's own report, done() prints one machine-readable line:
--   LOAD {"requests":..,"duration_s":..,"rps":..,"p50_ms":..,"p90_ms":..,"p99_ms":..,
--         "max_ms":..,"latency_from":"request-id"|"wrk","timed":..,"wrk_p99_ms":..,
--         "non2xx":..,"status_503":..,"status_4xx":..,"status_5xx":..,
--         "socket_errors":{"connect":..,"read":..,"write":..,"timeout":..}}
-- non2xx counts every answer outside 200-299 (wrk's own "Non-2xx" line counts
-- only >= 400); the socket errors are wrk's and are not in non2xx.
--
-- Latency.  wrk 4 "corrects" its latency histogram for coordinated omission
-- before anyone sees it (stats_correct in wrk.c): every answer slower than
-- twice the mean interval between requests on a connection adds made-up
-- samples, as if requests had kept arriving at the mean rate during the
-- stall.  With one connection a single 50 ms hiccup of this shared machine
-- then adds ~100 samples of 0.5-50 ms and moves p99 from 0.6 to 50 ms.  So
-- this script times each request itself: request() sends an X-Request-Id
-- (modeld echoes it on every answer) and notes the time, response() matches
-- the id and records write-to-answer time, exactly the span wrk measures,
-- uncorrected.  p50/p90/p99/max_ms are those; wrk_p99_ms is wrk's corrected
-- p99, for comparison.  If fewer than 90 % of the answers carry a known id
-- (a server that does not echo it), the wrk figures are reported instead and
-- latency_from says "wrk".

local ffi = require("ffi")
ffi.cdef [[
   typedef struct { long tv_sec; long tv_nsec; } bodylua_timespec;
   int clock_gettime(int clk, bodylua_timespec *ts);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bodylua_timespec")
local function now_us()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
   return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

-- Histogram buckets: exact microseconds below 1 ms, three significant digits
-- above (at most 0.1-1 % low): a few thousand keys whatever the run's length,
-- cheap to copy from the threads in done().
local floor, log10 = math.floor, math.log10
local function bucket(us)
   if us < 1000 then return floor(us) end
   local unit = 10 ^ (floor(log10(us)) - 2)
   return floor(us / unit) * unit
end

-- ---- main Lua state: runs setup() for each thread, and done() ----
-- Every wrk thread has its own Lua state, so what request()/response() count
-- lives there; done() runs in the main state and reads it back through the
-- thread objects kept here (the pattern of wrk's scripts/setup.lua).
local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)    -- 1, 2, ...: the thread's offset and id prefix
end

-- ---- per-thread state ----
local heads, rests = {}, {}   -- each request split after its request line
local next_i, seq = 0, 0
local sent = {}               -- X-Request-Id -> time written (us)

function init(args)
   -- the endpoint scripts (classify.lua, ...) set default_bodies before loading this one
   local file = args[1] or default_bodies
   if file == nil then
      error("body.lua: give the body file: wrk ... -s body.lua URL -- FILE")
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   -- formatting once here keeps request() cheap: at tens of thousands of
   -- requests a second the client must not be what is measured
   for line in io.lines(file) do
      if line ~= "" then
         local req = wrk.format(nil, nil, nil, line)
         local eol = req:find("\r\n", 1, true)
         heads[#heads + 1] = req:sub(1, eol + 1)
         rests[#rests + 1] = req:sub(eol + 2)
      end
   end
   if #heads == 0 then
      error("body.lua: no request bodies in " .. file)
   end
   -- Offsets spaced by the golden ratio spread any number of threads evenly
   -- over the file without knowing how many threads there are.
   next_i = floor((id - 1) * 0.6180339887 * #heads) % #heads
   -- globals, so that done() can read them with thread:get()
   non2xx, status_503, status_4xx, status_5xx = 0, 0, 0, 0
   hist, timed, max_us = {}, 0, 0
end

function request()
   next_i = next_i % #heads + 1
   seq = seq + 1
   local rid = id .. "-" .. seq
   sent[rid] = now_us()
   return heads[next_i] .. "X-Request-Id: " .. rid .. "\r\n" .. rests[next_i]
end

function response(status, headers, body)
   local rid = headers["X-Request-Id"] or headers["x-request-id"]
   local t0 = rid and sent[rid]
   if t0 then
      sent[rid] = nil
      local us = now_us() - t0
      local b = bucket(us)
      hist[b] = (hist[b] or 0) + 1
      timed = timed + 1
      if us > max_us then max_us = us end
   end
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if status == 503 then status_503 = status_503 + 1 end
      if status >= 400 and status < 500 then status_4xx = status_4xx + 1 end
      if status >= 500 then status_5xx = status_5xx + 1 end
   end
end

-- nearest-rank percentiles of a merged histogram
local function percentiles(h, n, ps)
   local keys = {}
   for k, _ in pairs(h) do keys[#keys + 1] = k end
   table.sort(keys)
   local out, cum, j = {}, 0, 1
   for _, k in ipairs(keys) do
      cum = cum + h[k]
      while j <= #ps and cum >= math.ceil(ps[j] / 100 * n) do
         out[j] = k
         j = j + 1
      end
   end
   return out
end

function done(summary, latency, _)
   local n = { non2xx = 0, status_503 = 0, status_4xx = 0, status_5xx = 0, timed = 0 }
   local h, max_us = {}, 0
   for _, t in ipairs(threads) do
      for k, _ in pairs(n) do
         n[k] = n[k] + (t:get(k) or 0)
      end
      for b, c in pairs(t:get("hist") or {}) do
         h[b] = (h[b] or 0) + c
      end
      max_us = math.max(max_us, t:get("max_us") or 0)
   end
   local p, from
   if n.timed > 0 and n.timed >= 0.9 * summary.requests then
      p = percentiles(h, n.timed, { 50, 90, 99 })
      p[4] = max_us
      from = "request-id"
   else
      p = { latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max }
      from = "wrk"
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      'LOAD {"requests":%d,"duration_s":%.3f,"rps":%.1f,' ..
      '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
      '"latency_from":"%s","timed":%d,"wrk_p99_ms":%.3f,' ..
      '"non2xx":%d,"status_503":%d,"status_4xx":%d,"status_5xx":%d,' ..
      '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
      summary.requests, secs, secs > 0 and summary.requests / secs or 0,
      p[1] / 1000, p[2] / 1000, p[3] / 1000, p[4] / 1000,
      from, n.timed, latency:percentile(99) / 1000,
      n.non2xx, n.status_503, n.status_4xx, n.status_5xx,
      e.connect, e.read, e.write, e.timeout))
end
