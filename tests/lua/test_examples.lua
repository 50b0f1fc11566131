-- Every examples/lua/*.lua runs to completion under this interpreter.

local T = ...

for _, f in ipairs(T.ls("examples/lua", ".lua")) do
    T.test("example " .. f, function()
        local cmd = T.interp .. " examples/lua/" .. f .. " > /dev/null"
        local ok, code = T.execute(cmd)
        T.ok(ok, cmd .. " exited with " .. tostring(code))
    end)
end
