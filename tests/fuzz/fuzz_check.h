/*  =========================================================================
    fuzz_check.h - the one helper the fuzz harnesses share

    FUZZ_CHECK (condition, ...) aborts with a message when an invariant does
    not hold, so libFuzzer records the input as a crash (tests/fuzz/run.sh
    prints its path). Harness code only: never linked into chatd.
    =========================================================================
*/

#ifndef FUZZ_CHECK_H_INCLUDED
#define FUZZ_CHECK_H_INCLUDED

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(condition, ...) do { \
    if (!(condition)) { \
        fprintf (stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #condition); \
        fprintf (stderr, __VA_ARGS__); \
        fputc ('\n', stderr); \
        abort (); \
    } \
} while (0)

#endif
