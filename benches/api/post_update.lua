-- wrk: POST an update to a random incident of $CRIER_BENCH_IDS, as $CRIER_BENCH_KEY.
local ids = {}
for line in io.lines(os.getenv("CRIER_BENCH_IDS")) do
  ids[#ids + 1] = line
end
local key = os.getenv("CRIER_BENCH_KEY")
local statuses = { "investigating", "identified", "monitoring" }
local counter = 0

request = function()
  counter = counter + 1
  local id = ids[math.random(#ids)]
  local body = '{"status":"' .. statuses[counter % 3 + 1] ..
    '","message":"Mitigation progressing in Europe, step ' .. counter .. '."}'
  return wrk.format("POST", "/v1/incidents/" .. id .. "/updates", {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }, body)
end
