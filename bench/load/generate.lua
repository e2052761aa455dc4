-- generate.lua: wrk against POST /v1/models/NAME/generate with the bodies prepare.py writes
-- (generate.jsonl); everything else is body.lua's, which this loads from beside it.
--
--   wrk -t2 -c32 -d10s -s bench/load/generate.lua http://127.0.0.1:8080/v1/models/MODEL/generate
--   wrk ... -s bench/load/generate.lua URL -- OTHER_FILE.jsonl
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
default_bodies = (os.getenv("OUT") or "/tmp/modeld-load") .. "/generate.jsonl"
dofile(here .. "body.lua")
