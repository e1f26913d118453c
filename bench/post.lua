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
   -- The latency at a grid of percentiles, the tail finely: bench.py pools
   -- the rounds' grids into one p99 of all their requests (wrk's histogram
   -- itself is not reachable from a script).
   local grid, sep = {50, 60, 70, 80, 85, 90}, ""
   for i = 1, 99 do grid[#grid + 1] = 90 + i / 10 end
   grid[#grid + 1] = 99.95
   grid[#grid + 1] = 99.99
   io.write('{"p_grid":[')
   for _, p in ipairs(grid) do
      io.write(string.format('%s[%g,%.3f]', sep, p, latency:percentile(p) / 1000))
      sep = ","
   end
   io.write(string.format('%s[100,%.3f]]}\n', sep, latency.max / 1000))
end
