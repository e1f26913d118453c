-- wrk script for scenario S1 (non-stream POST /api/chat): the body and an
-- optional Authorization header come from the environment so that one script
-- serves every contender (seed-shaped body for the server, OpenAI-shaped for
-- nginx and the mock). done() prints one JSON line that bench/bench.py reads.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"user_content":"Hello, benchmark","stream":false}'
wrk.headers["Content-Type"] = "application/json"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      '{"requests":%d,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
      '"err_status":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d}\n',
      summary.requests, summary.requests / secs,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      e.status, e.connect, e.read, e.write, e.timeout))
end
