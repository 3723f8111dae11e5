/*  =========================================================================
    test_idmap.c - chat_idmap, the id -> pointer map of ws-front, hub,
    presence and the SQLite backend's client_ids
    =========================================================================
*/

#include "test_util.h"
#include "chat_idmap.h"

//  Values are the keys' addresses in this array, so each one is checkable
static int s_values [4096];

static void *
s_value (uint64_t key)
{
    return &s_values [key % 4096];
}

//  Every key of keys [0..count) is there with its value, and nothing else
static void
s_assert_holds (const chat_idmap_t *map, const uint64_t *keys, size_t count)
{
    assert_int_equal (map->count, count);
    for (size_t i = 0; i < count; i++)
        assert_ptr_equal (chat_idmap_get (map, keys [i]), s_value (keys [i]));
    size_t cursor = 0, seen = 0;
    uint64_t key;
    void *value;
    while (chat_idmap_next (map, &cursor, &key, &value)) {
        assert_ptr_equal (value, s_value (key));
        seen++;
    }
    assert_int_equal (seen, count);
}

static void
test_put_get_remove (void **state)
{
    (void) state;
    chat_idmap_t map;
    chat_idmap_init (&map);
    assert_null (chat_idmap_get (&map, 7));
    assert_null (chat_idmap_remove (&map, 7));

    //  Sequential ids, as ws-front's connections and hub's users are
    uint64_t keys [3000];
    for (size_t i = 0; i < 3000; i++) {
        keys [i] = i + 1;
        assert_int_equal (chat_idmap_put (&map, keys [i], s_value (keys [i])), 0);
    }
    s_assert_holds (&map, keys, 3000);

    //  Every other one removed: the backward shift keeps the rest reachable
    size_t kept = 0;
    for (size_t i = 0; i < 3000; i++)
        if (i % 2)
            assert_ptr_equal (chat_idmap_remove (&map, keys [i]), s_value (keys [i]));
        else
            keys [kept++] = keys [i];
    s_assert_holds (&map, keys, kept);
    assert_null (chat_idmap_get (&map, 2));
    chat_idmap_release (&map);
    assert_int_equal (map.capacity, 0);
}

static void
test_colliding_runs (void **state)
{
    (void) state;
    chat_idmap_t map;
    chat_idmap_init (&map);
    //  Multiples of a large power of two share their home slot's
    //  neighbourhood: long probe runs that wrap around the table
    uint64_t keys [40];
    for (size_t i = 0; i < 40; i++) {
        keys [i] = (uint64_t) (i + 1) << 40;
        assert_int_equal (chat_idmap_put (&map, keys [i], s_value (keys [i])), 0);
    }
    s_assert_holds (&map, keys, 40);
    //  Remove from the front of the runs, then the middle
    for (size_t i = 0; i < 10; i++)
        assert_non_null (chat_idmap_remove (&map, keys [i]));
    for (size_t i = 20; i < 25; i++)
        assert_non_null (chat_idmap_remove (&map, keys [i]));
    uint64_t rest [25];
    size_t n = 0;
    for (size_t i = 10; i < 40; i++)
        if (i < 20 || i >= 25)
            rest [n++] = keys [i];
    s_assert_holds (&map, rest, n);
    chat_idmap_release (&map);
}

static void
test_replace_never_grows (void **state)
{
    (void) state;
    chat_idmap_t map;
    chat_idmap_init (&map);
    //  64 slots hold 48 keys before the next insert grows the map
    uint64_t keys [48];
    for (size_t i = 0; i < 48; i++) {
        keys [i] = i + 1;
        assert_int_equal (chat_idmap_put (&map, keys [i], &s_values [4000]), 0);
    }
    assert_int_equal (map.capacity, 64);
    //  Replacing a value at that fill does not allocate (so cannot fail)
    for (size_t i = 0; i < 48; i++)
        assert_int_equal (chat_idmap_put (&map, keys [i], s_value (keys [i])), 0);
    assert_int_equal (map.capacity, 64);
    s_assert_holds (&map, keys, 48);
    //  A new key does grow it
    assert_int_equal (chat_idmap_put (&map, 49, s_value (49)), 0);
    assert_int_equal (map.capacity, 128);
    assert_int_equal (map.count, 49);
    chat_idmap_release (&map);
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_put_get_remove),
        cmocka_unit_test (test_colliding_runs),
        cmocka_unit_test (test_replace_never_grows),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
