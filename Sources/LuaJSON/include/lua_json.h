#ifndef MOONGATE_LUA_JSON_H
#define MOONGATE_LUA_JSON_H

// JSON for Lua 5.4 (Sources/LuaJSON/json.c). Decoding keeps integers as Lua integers and marks
// arrays with a shared metatable, so [] and {} both survive a round trip; every allocation goes
// through the state's allocator, so the memory cap holds and a failure is a Lua memory error.

// Declared as the incomplete struct rather than by including <lua.h>, so that this header needs
// no Lua include path and does not clash with another module's import of lua.h.
struct lua_State;

/// Pushes the module table { encode, decode, null, array, is_array } and returns 1.
int moongate_json_open(struct lua_State *L);

/// The same, under the name `require` looks for (for testing with a stock interpreter).
int luaopen_moongate_json(struct lua_State *L);

/// Sets the array metatable on the table at `index` (anything else is left alone), so that it
/// encodes as a JSON array even when empty. Creates the metatable the first time in a state.
void moongate_json_mark_array(struct lua_State *L, int index);

/// Pushes json.null: a light userdata holding NULL.
void moongate_json_push_null(struct lua_State *L);

#endif
