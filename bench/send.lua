-- bench/send.lua — wrk script: POST /api/v1/usr/otp with a new phone number
-- per request.  Used for the otpd send scenarios and, unchanged, for the
-- nginx-static ceiling, so that wrk does the same work in both.
--
--   wrk -tN ... -s bench/send.lua URL -- [START] [N] [PREFIX] [PATH] [CLIENTS]
--
-- N must be wrk's -t.  Request k of thread t (of N) uses number PREFIX .. 7 digits of
-- (START + t + N*k) mod 10^7: distinct across threads, and across runs when
-- each run starts where the previous one could have ended (bench/run.sh
-- advances START by a generous bound).  PREFIX defaults to +98912 (bench/
-- prefill.c uses +98910 for codes and +98911 for users).
-- CLIENTS: "one" (default) or "many": each request as its own client
-- 10.x.y.z in X-Forwarded-For (as bench/verify.lua).
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
local start, nthreads, prefix, path, many
local headers = { ["Content-Type"] = "application/json" }

function init(args)
   start = tonumber(args[1] or "0")
   nthreads = tonumber(args[2] or "1")
   prefix = args[3] or "+98912"
   path = args[4] or "/api/v1/usr/otp"
   many = (args[5] or "one") == "many"
   if tid >= nthreads then error("send.lua: pass wrk's -t as the second argument") end
end

function request()
   local i = (start + tid + nthreads * k) % 10000000
   k = k + 1
   local body = string.format('{"phone_number":"%s%07d"}', prefix, i)
   if many then
      headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256,
                                                   math.floor(i / 256) % 256, i % 256)
   end
   return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   local issued = 0
   for _, t in ipairs(threads) do issued = issued + (t:get("k") or 0) end
   io.write(string.format(
      'BENCH {"script":"send","requests":%d,"issued":%d,"duration_us":%d,"bytes":%d,' ..
      '"rps":%.1f,"lat_mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
      summary.requests, issued, summary.duration, summary.bytes,
      summary.requests / (summary.duration / 1e6), latency.mean,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.status, e.timeout))
end
