/*
 * wisp's JavaScript runtime: QuickJS-ng with a bootstrap module that
 * imports the handler and serves one event (runtimes/javascript/
 * bootstrap.js; the contract is docs/RUNTIMES.md).
 *
 *   wisp-js BOOTSTRAP.js [ARGS...]
 *
 * Runs BOOTSTRAP.js as an ES module with qjs:std and qjs:os available and
 * relative imports resolved from files, then the event loop until it is
 * done. The bootstrap decides the exit status.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "quickjs-libc.h"
#include "quickjs.h"

/* Math.random from fresh entropy on every call. QuickJS seeds its own
 * generator from the clock when the context is made: once per deploy, in
 * the snapshot, so every restore would replay the same sequence. */
static JSValue random_from_entropy(JSContext *ctx, JSValueConst this_val,
                                   int argc, JSValueConst *argv) {
    uint64_t bits;
    (void)this_val;
    (void)argc;
    (void)argv;
    if (getentropy(&bits, sizeof bits) != 0)
        return JS_ThrowInternalError(ctx, "getentropy failed");
    return JS_NewFloat64(ctx, (double)(bits >> 11) * 0x1.0p-53);
}

static int replace_math_random(JSContext *ctx) {
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue math = JS_GetPropertyStr(ctx, global, "Math");
    int r = JS_SetPropertyStr(
        ctx, math, "random",
        JS_NewCFunction(ctx, random_from_entropy, "random", 0));
    JS_FreeValue(ctx, math);
    JS_FreeValue(ctx, global);
    return r;
}

/* Compiles and runs `path` as a module, then runs the event loop. */
static int run_module(JSContext *ctx, const char *path) {
    size_t len;
    uint8_t *source = js_load_file(ctx, &len, path);
    if (!source) {
        fprintf(stderr, "wisp-js: cannot read %s\n", path);
        return 1;
    }
    JSValue fn = JS_Eval(ctx, (const char *)source, len, path,
                         JS_EVAL_TYPE_MODULE | JS_EVAL_FLAG_COMPILE_ONLY);
    js_free(ctx, source);
    if (JS_IsException(fn)) {
        js_std_dump_error(ctx);
        return 1;
    }
    if (js_module_set_import_meta(ctx, fn, false, true) < 0) {
        js_std_dump_error(ctx);
        return 1;
    }
    JSValue result = js_std_await(ctx, JS_EvalFunction(ctx, fn));
    if (JS_IsException(result)) {
        js_std_dump_error(ctx);
        return 1;
    }
    JS_FreeValue(ctx, result);
    return js_std_loop(ctx) ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s BOOTSTRAP.js [ARGS...]\n", argv[0]);
        return 2;
    }
    JSRuntime *rt = JS_NewRuntime();
    if (!rt)
        return 1;
    js_std_init_handlers(rt);
    JS_SetModuleLoaderFunc2(rt, NULL, js_module_loader,
                            js_module_check_attributes, NULL);
    JSContext *ctx = JS_NewContext(rt);
    if (!ctx)
        return 1;
    js_init_module_std(ctx, "qjs:std");
    js_init_module_os(ctx, "qjs:os");
    js_std_add_helpers(ctx, argc - 1, argv + 1);
    if (replace_math_random(ctx) < 0) {
        js_std_dump_error(ctx);
        return 1;
    }
    int status = run_module(ctx, argv[1]);
    fflush(stdout);
    fflush(stderr);
    /* No teardown: the process ends here, and freeing every object would
     * only touch memory the snapshot shares. */
    _exit(status);
}
