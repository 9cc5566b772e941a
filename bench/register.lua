-- wrk script: `register` mutations, a new username per request, into demo tenant t1.
--   wrk -t2 -c8 -d20s --latency -s bench/register.lua http://127.0.0.1:8080/graphql
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

-- Each wrk thread has its own Lua state: number them so usernames never collide.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

local counter = 0
local run = tostring(os.time())

function request()
  counter = counter + 1
  local body = '{"query":"mutation($i: RegisterInput!) { register(input: $i) { token } }",' ..
    '"variables":{"i":{"tenantId":"00000000-0000-4000-8000-000000000001",' ..
    '"username":"wrk-' .. run .. '-' .. id .. '-' .. counter .. '",' ..
    '"password":"correct-horse-battery","taxId":"TAX-1"}}}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or not body:find('"token"') then
    error("register failed: " .. status .. " " .. body)
  end
end
