-- fill-mask.lua: wrk against POST /v1/models/NAME/fill-mask with the bodies prepare.py writes
-- (fill-mask.jsonl); everything else is body.lua's, which this loads from beside it.
--
--   wrk -t2 -c32 -d10s -s bench/load/fill-mask.lua http://127.0.0.1:8080/v1/models/MODEL/fill-mask
--   wrk ... -s bench/load/fill-mask.lua URL -- OTHER_FILE.jsonl
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
default_bodies = (os.getenv("OUT") or "/tmp/modeld-load") .. "/fill-mask.jsonl"
dofile(here .. "body.lua")
