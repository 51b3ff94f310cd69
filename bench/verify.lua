-- bench/verify.lua — wrk script: POST /api/v1/usr/otp/verify, each request
-- a right code that bench/prefill wrote before otpd started, each used once.
--
--   wrk -tN ... -s bench/verify.lua URL -- START COUNT N [PREFIX [CLIENTS]]
--
-- N must be wrk's -t.  Request k of thread t (of N) verifies pool entry
-- i = START + t + N*k:
--   phone  PREFIX .. 7 digits of i      (PREFIX defaults to +98910)
--   code   i mod 10^6, 6 digits         (= bench/prefill.c)
-- CLIENTS: "one" (default) sends as wrk's own address; "many" sends each
-- request as client 10.x.y.z (from i) in X-Forwarded-For, for an otpd that
-- trusts 127.0.0.1 as its proxy (OTPD_TRUSTED_PROXIES): each request then has
-- its own client address and throttle, as from a nation of phones.
-- Entries [START, START+COUNT) belong to this run.  Past them the script
-- wraps around (those codes are used up: 400 invalid_code, counted in
-- err_status) and says how many it wrapped in "wrapped": a run that wraps
-- needs a bigger BENCH_VERIFY_POOL.
-- done() prints one line: BENCH {json} (see bench/report.py).

local threads = {}

-- setup() of thread i runs before thread i starts but, in wrk 4.1, after
-- threads 0..i-1 have started: nothing may be set on those any more (it
-- would race with them), so the thread count comes as an argument.
function setup(thread)
   table.insert(threads, thread)
   thread:set("tid", #threads - 1)
end

k = 0
wrapped = 0
local start, count, nthreads, prefix, many
local path = "/api/v1/usr/otp/verify"
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   start = tonumber(args[1] or "0")
   count = tonumber(args[2] or "1000000")
   nthreads = tonumber(args[3] or "1")
   prefix = args[4] or "+98910"
   many = (args[5] or "one") == "many"
   if tid >= nthreads then error("verify.lua: pass wrk's -t as the third argument") end
end

function request()
   local off = tid + nthreads * k
   k = k + 1
   if off >= count then
      wrapped = wrapped + 1
      off = off % count
   end
   local i = (start + off) % 10000000
   local body = string.format('{"phone_number":"%s%07d","code":"%06d"}',
                              prefix, i, i % 1000000)
   if many then
      headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256,
                                                   math.floor(i / 256) % 256, i % 256)
   end
   return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   local w, issued = 0, 0
   for _, t in ipairs(threads) do
      w = w + (t:get("wrapped") or 0)
      issued = issued + (t:get("k") or 0)
   end
   io.write(string.format(
      'BENCH {"script":"verify","requests":%d,"issued":%d,"wrapped":%d,"duration_us":%d,"bytes":%d,' ..
      '"rps":%.1f,"lat_mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
      summary.requests, issued, w, summary.duration, summary.bytes,
      summary.requests / (summary.duration / 1e6), latency.mean,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
