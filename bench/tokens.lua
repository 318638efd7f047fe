-- wrk script: each request carries "Authorization: Bearer <token>", cycling through a token
-- file (one token per line) given after "--":  wrk ... -s bench/tokens.lua URL -- tokens.txt
-- A line "<token> <proof>" is sent as "Authorization: DPoP <token>" with "DPoP: <proof>"; each
-- proof is good once, so a DPoP file needs more lines than the run sends requests.
-- Requests are pre-formatted in init() so the client spends no time building them.
local requests = {}
local n = 0
local i = 0

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s tokens.lua URL -- TOKEN_FILE")
  end
  for line in io.lines(path) do
    if #line > 0 then
      n = n + 1
      local headers = { ["Host"] = wrk.headers["Host"] }
      local token, proof = line:match("^(%S+) (%S+)$")
      if proof then
        headers["Authorization"] = "DPoP " .. token
        headers["DPoP"] = proof
      else
        headers["Authorization"] = "Bearer " .. line
      end
      requests[n] = wrk.format("GET", wrk.path, headers)
    end
  end
  if n == 0 then
    error("no tokens in " .. path)
  end
end

function request()
  i = i % n + 1
  return requests[i]
end
