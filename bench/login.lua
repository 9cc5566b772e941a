-- wrk script: `login` mutations for one user, over and over.
--   wrk -t2 -c8 -d20s -s bench/login.lua http://127.0.0.1:8080/graphql
-- The user must exist (the dev.sh walk-through registers alice).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"query":"mutation($i: LoginInput!) { login(input: $i) { token } }",' ..
           '"variables":{"i":{"username":"alice","password":"correct-horse-battery"}}}'

function response(status, headers, body)
  if status ~= 200 or not body:find('"token"') then
    error("login failed: " .. status .. " " .. body)
  end
end
