#ifndef MOONGATE_CLUA_SHIM_H
#define MOONGATE_CLUA_SHIM_H

// The Lua C API as Swift sees it. Lua spells much of its API as macros, which Swift cannot import,
// so each one Moongate uses is wrapped here in a `static inline` function (a system library compiles
// no C of its own). Everything that may raise a Lua error (a longjmp) on Moongate's behalf lives in
// C too, so that no longjmp ever crosses a Swift frame.

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const int MOONGATE_LUA_OK = LUA_OK;
static const int MOONGATE_LUA_MULTRET = LUA_MULTRET;

/// The chunk name of the host's Lua prelude (Sources/MoongateCore/Scripts/prelude.lua).
#define MOONGATE_PRELUDE_CHUNK "moongate/prelude.lua"

/// Whether a chunk is the host's own rather than a script file: the prelude, or a chunk named
/// "=..." (the microbenchmarks' and the tests' inline code).
static inline int moongate_is_host_chunk(const char *short_src) {
    return short_src[0] == '=' || strcmp(short_src, MOONGATE_PRELUDE_CHUNK) == 0;
}

static inline int moongate_registryindex(void) { return LUA_REGISTRYINDEX; }
static inline int moongate_upvalueindex(int i) { return lua_upvalueindex(i); }
static inline void moongate_pop(lua_State *L, int n) { lua_pop(L, n); }
static inline void moongate_newtable(lua_State *L) { lua_newtable(L); }
static inline void moongate_insert(lua_State *L, int idx) { lua_insert(L, idx); }
static inline void moongate_remove(lua_State *L, int idx) { lua_remove(L, idx); }
static inline int moongate_pcall(lua_State *L, int nargs, int nresults, int msgh) {
    return lua_pcall(L, nargs, nresults, msgh);
}
static inline const char *moongate_tolstring(lua_State *L, int idx, size_t *len) {
    return lua_tolstring(L, idx, len);
}
static inline lua_Number moongate_tonumber(lua_State *L, int idx, int *isnum) {
    return lua_tonumberx(L, idx, isnum);
}
static inline lua_Integer moongate_tointeger(lua_State *L, int idx, int *isnum) {
    return lua_tointegerx(L, idx, isnum);
}
static inline void moongate_pushcfunction(lua_State *L, lua_CFunction fn) { lua_pushcfunction(L, fn); }

// The per-state pointer-sized extra space holds the host's context object (unretained).
static inline void moongate_set_context(lua_State *L, void *context) {
    memcpy(lua_getextraspace(L), &context, sizeof(void *));
}
static inline void *moongate_get_context(lua_State *L) {
    void *context;
    memcpy(&context, lua_getextraspace(L), sizeof(void *));
    return context;
}

typedef int (*moongate_swift_function)(lua_State *L);

// Replaces the error object on top of L with a table { message = ..., source = "file", line = n,
// traceback = "..." } describing it, from the stack of `where` (L itself inside a message handler,
// or a coroutine that died) starting at `first_level`. The innermost Lua frame is blamed (as Redis
// does) so errors raised from C still name the script line that caused them.
static inline void moongate_describe_error(lua_State *L, lua_State *where, int first_level) {
    int object = lua_gettop(L);
    // A string or number only: an error object's __tostring would run script code here, outside
    // the budget (and, for a dead coroutine, outside any protected call).
    const char *message = lua_type(L, object) == LUA_TSTRING || lua_type(L, object) == LUA_TNUMBER
        ? lua_tostring(L, object)
        : lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, object));
    lua_createtable(L, 0, 4);
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_Debug ar;
    for (int level = first_level; lua_getstack(where, level, &ar); level++) {
        lua_getinfo(where, "Sl", &ar);
        // Blame script code, not the host's own chunks.
        if (ar.currentline > 0 && !moongate_is_host_chunk(ar.short_src)) {
            lua_pushstring(L, ar.short_src);
            lua_setfield(L, -2, "source");
            lua_pushinteger(L, ar.currentline);
            lua_setfield(L, -2, "line");
            break;
        }
    }
    luaL_traceback(L, where, NULL, first_level);
    lua_setfield(L, -2, "traceback");
    lua_replace(L, object);
    lua_settop(L, object);
}

// Message handler for every protected call the host makes.
static inline int moongate_message_handler(lua_State *L) {
    moongate_describe_error(L, L, 1);
    return 1;
}

// Per-state limits, reachable from any of the state's threads through lua_getallocf: the memory
// cap (enforced by the allocator) and the instruction budget of the current call.
typedef struct {
    size_t used;
    size_t limit;
    long long budget;
    long long spent;
    int tripped;
    // CLOCK_MONOTONIC nanoseconds past which the running call stops (0: none). The budget counts
    // instructions; this also bounds calls that repeat C functions whose work is not counted.
    long long deadline;
} moongate_limits;

static inline long long moongate_now_nanoseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

enum { MOONGATE_HOOK_GRANULARITY = 1000 };

static inline moongate_limits *moongate_limits_of(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    return (moongate_limits *)ud;
}

// Instruction budget. The count hook fires every MOONGATE_HOOK_GRANULARITY instructions on the
// main thread and on every coroutine (they inherit the hook), all charged to one budget, so spawning
// coroutines does not reset the count. Once the budget is spent the hook fires on every instruction
// of every thread and raises, so a script's own pcall or coroutine.resume cannot swallow the error
// and carry on looping (the technique Redis uses for busy scripts). The error names the script line
// that was running.
static inline void moongate_budget_hook(lua_State *L, lua_Debug *ar);

static inline void moongate_budget_exceeded(lua_State *L) {
    moongate_limits *limits = moongate_limits_of(L);
    if (!limits->tripped) limits->tripped = 1;
    lua_sethook(L, moongate_budget_hook, LUA_MASKCOUNT, 1);
    const char *what = limits->tripped == 2 ? "time limit (--lua-timeout) exceeded" : "instruction budget exceeded";
    lua_Debug running;
    int level = lua_getstack(L, 0, &running) && lua_getinfo(L, "Sl", &running) && running.currentline > 0;
    if (!level && lua_getstack(L, 1, &running) && lua_getinfo(L, "Sl", &running) && running.currentline > 0) level = 1;
    if (level) {
        lua_pushfstring(L, "%s:%d: %s", running.short_src, running.currentline, what);
    } else {
        lua_pushstring(L, what);
    }
    lua_error(L);
}

static inline void moongate_budget_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    moongate_limits *limits = moongate_limits_of(L);
    if (!limits->tripped) {
        limits->spent += MOONGATE_HOOK_GRANULARITY;
        if (limits->deadline > 0 && moongate_now_nanoseconds() > limits->deadline) {
            limits->tripped = 2;
        } else if (limits->budget <= 0 || limits->spent < limits->budget) {
            lua_sethook(L, moongate_budget_hook, LUA_MASKCOUNT, MOONGATE_HOOK_GRANULARITY);
            return;
        }
    }
    moongate_budget_exceeded(L);
}

// `deadline`: CLOCK_MONOTONIC nanoseconds past which the call stops (0: none).
static inline void moongate_set_budget(lua_State *L, long long budget, long long deadline) {
    moongate_limits *limits = moongate_limits_of(L);
    limits->budget = budget;
    limits->spent = 0;
    limits->tripped = 0;
    limits->deadline = budget > 0 ? deadline : 0;
    if (budget > 0) {
        lua_sethook(L, moongate_budget_hook, LUA_MASKCOUNT, MOONGATE_HOOK_GRANULARITY);
    } else {
        lua_sethook(L, NULL, 0, 0);
    }
}

// Starts or continues coroutine `co` with `nargs` values on its stack, under the instruction budget,
// `*spent` instructions of which earlier runs of the same callback already used (time spent waiting
// between runs is not charged). On return `*spent` is updated and `*nresults` values are on `co`'s
// stack: the results, the yielded values, or (on an error) the error object.
// `deadline` as for moongate_set_budget: the callback's, fixed when it started, so waits do not
// extend it.
static inline int moongate_resume(lua_State *L, lua_State *co, int nargs, int *nresults, long long budget, long long *spent, long long deadline) {
    moongate_limits *limits = moongate_limits_of(L);
    limits->budget = budget;
    limits->spent = *spent;
    limits->tripped = 0;
    limits->deadline = budget > 0 ? deadline : 0;
    if (budget > 0) {
        lua_sethook(co, moongate_budget_hook, LUA_MASKCOUNT, MOONGATE_HOOK_GRANULARITY);
    }
    int status = lua_resume(co, L, nargs, nresults);
    *spent = limits->spent;
    limits->budget = 0;
    limits->spent = 0;
    limits->tripped = 0;
    limits->deadline = 0;
    lua_sethook(co, NULL, 0, 0);
    return status;
}

// Swift functions callable from Lua. A Swift function returns the number of results it pushed, or
// -1 with an error message on top of the stack; the trampoline then raises the error, in C, blamed
// on the Lua caller's file and line.
//
// No Lua error may unwind a Swift frame (a longjmp would skip its cleanup and leave the host's
// bookkeeping, such as which thread it works on, wrong). The only error a push can raise is a
// memory error, so the trampoline lifts the memory cap while Swift runs and checks it afterwards:
// a call whose results pass the cap has them dropped and fails here, in C, as a memory error.
static inline int moongate_call_swift(lua_State *L) {
    moongate_swift_function fn = (moongate_swift_function)lua_touserdata(L, lua_upvalueindex(1));
    moongate_limits *limits = moongate_limits_of(L);
    size_t cap = limits->limit;
    int base = lua_gettop(L);
    limits->limit = 0;
    int results = fn(L);
    if (results < 0) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
        limits->limit = cap;
        return lua_error(L);
    }
    if (cap > 0 && limits->used > cap) {
        lua_settop(L, base);
        luaL_where(L, 1);
        lua_pushliteral(L, "the result would pass the script's memory cap (--lua-memory): not enough memory");
        lua_concat(L, 2);
        limits->limit = cap;
        return lua_error(L);
    }
    limits->limit = cap;
    return results;
}

static inline void moongate_push_swift_function(lua_State *L, moongate_swift_function fn) {
    lua_pushlightuserdata(L, (void *)fn);
    lua_pushcclosure(L, moongate_call_swift, 1);
}

// Work a C function does in one call, charged to the instruction budget of the running callback
// as if it were `units` instructions: past the budget it fails like a Lua loop would.
static inline void moongate_budget_exceeded(lua_State *L);

static inline void moongate_charge(lua_State *L, lua_Unsigned units) {
    moongate_limits *limits = moongate_limits_of(L);
    if (limits->budget <= 0) return;
    lua_Unsigned room = limits->spent < limits->budget ? (lua_Unsigned)(limits->budget - limits->spent) : 0;
    if (units < room) {
        limits->spent += (long long)units;
        // A large piece of work is a moment to look at the clock too (small ones wait for the hook).
        if (units < 1024 || limits->deadline <= 0 || moongate_now_nanoseconds() <= limits->deadline) return;
        limits->tripped = 2;
    } else {
        limits->spent = limits->budget;
    }
    moongate_budget_exceeded(L);
}

static inline int moongate_is_yield(int status) { return status == LUA_YIELD; }

// A full collection (no finalizers run: scripts may not register any).
static inline void moongate_collect_garbage(lua_State *L) { lua_gc(L, LUA_GCCOLLECT); }

// Memory cap: an allocator that refuses to grow a state past `limit` bytes makes Lua raise a
// memory error in the script instead of exhausting the host.
static inline void *moongate_allocate(void *ud, void *ptr, size_t osize, size_t nsize) {
    moongate_limits *allocation = (moongate_limits *)ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        allocation->used -= old;
        return NULL;
    }
    if (allocation->limit > 0 && nsize > old && allocation->used - old + nsize > allocation->limit) {
        return NULL;
    }
    void *grown = realloc(ptr, nsize);
    if (grown != NULL) {
        allocation->used = allocation->used - old + nsize;
    }
    return grown;
}

static inline lua_State *moongate_newstate(moongate_limits *allocation) {
    lua_State *L = lua_newstate(moongate_allocate, allocation);
    if (L != NULL) {
        lua_atpanic(L, NULL);
        moongate_set_context(L, NULL);
    }
    return L;
}

// Calls the library function a wrapper replaced (its upvalue) with the wrapper's arguments, and
// returns all it returns.
static inline int moongate_call_original(lua_State *L) {
    int base = lua_gettop(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, base, LUA_MULTRET);
    return lua_gettop(L);
}

// A library function whose work grows with its first argument (a string's bytes, a table's
// length), charged before it runs: length / upvalue 2 instructions. Without it a loop calling
// s:upper() on a long string, or table.insert(t, 1, x) on a long table, runs minutes on a budget
// meant for a fraction of a second.
static inline int moongate_charged_by_length(lua_State *L) {
    int type = lua_type(L, 1);
    if (type == LUA_TSTRING || type == LUA_TTABLE) {
        lua_Unsigned per = (lua_Unsigned)lua_tointeger(L, lua_upvalueindex(2));
        moongate_charge(L, (lua_Unsigned)lua_rawlen(L, 1) / (per > 0 ? per : 1));
    }
    return moongate_call_original(L);
}

// string.rep with its work charged to the budget, a repetition an instruction; an empty result is
// made without looping (Lua's own loops once per repetition even when there is nothing to copy).
static inline int moongate_string_rep(lua_State *L) {
    size_t length = 0, separator = 0;
    luaL_checklstring(L, 1, &length);
    lua_Integer count = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &separator);
    if (count <= 0 || (length == 0 && (separator == 0 || count == 1))) {
        lua_pushliteral(L, "");
        return 1;
    }
    moongate_charge(L, (lua_Unsigned)count);
    return moongate_call_original(L);
}

// table.move with its work charged to the budget, an element an instruction.
static inline int moongate_table_move(lua_State *L) {
    lua_Integer first = luaL_checkinteger(L, 2);
    lua_Integer last = luaL_checkinteger(L, 3);
    if (last >= first) moongate_charge(L, (lua_Unsigned)last - (lua_Unsigned)first + 1u);
    return moongate_call_original(L);
}

// charge(units): for the prelude, which charges the compiler's work in `load` this way.
static inline int moongate_charge_function(lua_State *L) {
    lua_Integer units = luaL_checkinteger(L, 1);
    if (units > 0) moongate_charge(L, (lua_Unsigned)units);
    return 0;
}

// Replaces library.name with `replacement`, which gets the original as its upvalue.
static inline void moongate_wrap_library_function(lua_State *L, const char *library, const char *name, lua_CFunction replacement) {
    lua_getglobal(L, library);
    lua_getfield(L, -1, name);
    lua_pushcclosure(L, replacement, 1);
    lua_setfield(L, -2, name);
    lua_pop(L, 1);
}

// The deliberate standard library: no io, no package/require, no debug for scripts, and os reduced
// to time-keeping. The `debug` table is handed to the host prelude only, which keeps what it needs.
static inline void moongate_open_sandboxed_libraries(lua_State *L) {
    static const luaL_Reg global_libraries[] = {
        { LUA_GNAME, luaopen_base }, { LUA_TABLIBNAME, luaopen_table }, { LUA_STRLIBNAME, luaopen_string },
        { LUA_MATHLIBNAME, luaopen_math }, { LUA_UTF8LIBNAME, luaopen_utf8 }, { LUA_COLIBNAME, luaopen_coroutine },
        { LUA_OSLIBNAME, luaopen_os }, { NULL, NULL },
    };
    for (const luaL_Reg *library = global_libraries; library->func != NULL; library++) {
        luaL_requiref(L, library->name, library->func, 1);
        lua_pop(L, 1);
    }
    lua_pushnil(L); lua_setglobal(L, "dofile");
    lua_pushnil(L); lua_setglobal(L, "loadfile");
    lua_getglobal(L, LUA_OSLIBNAME);
    static const char *const unsafe_os[] = { "exit", "execute", "remove", "rename", "tmpname", "setlocale", NULL };
    for (const char *const *name = unsafe_os; *name != NULL; name++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *name);
    }
    lua_pop(L, 1);
    moongate_wrap_library_function(L, LUA_STRLIBNAME, "rep", moongate_string_rep);
    moongate_wrap_library_function(L, LUA_TABLIBNAME, "move", moongate_table_move);
    // Scanning a string costs about an instruction per 16 bytes; shifting or visiting a table's
    // elements about one per 4.
    static const struct { const char *library; const char *name; lua_Integer per; } charged[] = {
        { LUA_STRLIBNAME, "upper", 16 }, { LUA_STRLIBNAME, "lower", 16 }, { LUA_STRLIBNAME, "reverse", 16 },
        { LUA_STRLIBNAME, "byte", 16 }, { LUA_STRLIBNAME, "find", 16 }, { LUA_STRLIBNAME, "match", 16 },
        { LUA_STRLIBNAME, "gmatch", 16 }, { LUA_STRLIBNAME, "gsub", 16 }, { LUA_STRLIBNAME, "format", 16 },
        { LUA_UTF8LIBNAME, "len", 16 }, { LUA_UTF8LIBNAME, "codepoint", 16 }, { LUA_UTF8LIBNAME, "offset", 16 },
        { LUA_TABLIBNAME, "insert", 4 }, { LUA_TABLIBNAME, "remove", 4 }, { LUA_TABLIBNAME, "concat", 4 },
        { LUA_TABLIBNAME, "unpack", 4 }, { LUA_TABLIBNAME, "sort", 4 },
        { NULL, NULL, 0 },
    };
    for (int i = 0; charged[i].library != NULL; i++) {
        lua_getglobal(L, charged[i].library);
        lua_getfield(L, -1, charged[i].name);
        lua_pushinteger(L, charged[i].per);
        lua_pushcclosure(L, moongate_charged_by_length, 2);
        lua_setfield(L, -2, charged[i].name);
        lua_pop(L, 1);
    }
    // Strings' shared metatable is the host's too (its prelude calls string methods): scripts
    // may not replace its __index.
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushliteral(L, "string");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
}

// Leaves the debug module and the budget's `charge` on the stack, for the host prelude only.
static inline void moongate_push_host_libraries(lua_State *L) {
    luaL_requiref(L, LUA_DBLIBNAME, luaopen_debug, 0);
    lua_pushcfunction(L, moongate_charge_function);
}

#endif
