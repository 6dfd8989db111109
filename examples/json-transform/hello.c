/*
 * hello.c - the trivial benchmark function, the C twin of examples/hello.wat:
 * greets its first argument (or "world") on stdout.
 *
 *   hello          -> "hello, world!\n"
 *   hello you      -> "hello, you!\n"
 *
 * Built natively (fork/exec and container baselines) and for wasm32-wasi
 * (wasmtime baseline), so it sticks to stdio.
 */
#include <stdio.h>

int main(int argc, char **argv)
{
    const char *name = argc >= 2 ? argv[1] : "world";
    if (printf("hello, %s!\n", name) < 0 || fflush(stdout) != 0)
        return 1;
    return 0;
}
