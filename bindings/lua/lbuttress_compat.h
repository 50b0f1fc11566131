/*
 * The few Lua 5.4 API calls lbuttress.c uses that LuaJIT's 5.1 API lacks.
 * LuaJIT 2.1 already has luaL_setfuncs, luaL_testudata, luaL_setmetatable
 * and luaL_newlib.
 */
#ifndef LBUTTRESS_COMPAT_H
#define LBUTTRESS_COMPAT_H

#include <math.h>

#if LUA_VERSION_NUM < 503

#ifndef LUA_OK
#define LUA_OK 0
#endif

#define lua_newuserdatauv(L, size, nuv) lua_newuserdata((L), (size))

/* One user value: LuaJIT keeps a table (the environment) per userdata. */
static int
lua_setiuservalue(lua_State *L, int idx, int n)
{
  (void)n;
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
  return lua_setfenv(L, idx);
}

/* 5.1 numbers are doubles: "integer" means integral and in int64 range. */
static int
lua_isinteger(lua_State *L, int idx)
{
  lua_Number d;
  if (lua_type(L, idx) != LUA_TNUMBER) return 0;
  d = lua_tonumber(L, idx);
  return d == floor(d) && d >= -9223372036854775808.0 &&
         d < 9223372036854775808.0;
}

#endif /* LUA_VERSION_NUM < 503 */

#endif /* LBUTTRESS_COMPAT_H */
