/*  =========================================================================
    test_wire.c - client-facing formats: timestamps, the message object and
    the validation rules for nicknames, passwords, UTF-8 and content
    =========================================================================
*/

#include "test_util.h"
#include "chat_wire.h"
#include <inttypes.h>
#include <time.h>

//  --------------------------------------------------------------------------
//  Time

static void
test_now_ms (void **state)
{
    (void) state;
    int64_t before = (int64_t) time (NULL) * 1000;
    int64_t now = chat_now_ms ();
    int64_t after = (int64_t) time (NULL) * 1000 + 1000;
    assert_true (now >= before);
    assert_true (now < after);
    //  It moves forward
    zclock_sleep (5);
    assert_true (chat_now_ms () >= now + 4);
}

static void
s_assert_format (int64_t ms, const char *expected)
{
    char buf [CHAT_TIMESTAMP_SIZE];
    chat_timestamp_format (ms, buf, sizeof buf);
    assert_string_equal (buf, expected);
    assert_int_equal (strlen (buf), 24);
    int64_t parsed = -12345;
    assert_int_equal (chat_timestamp_parse (buf, &parsed), 0);
    assert_int_equal (parsed, ms);
}

static void
test_timestamp_format (void **state)
{
    (void) state;
    s_assert_format (0, "1970-01-01T00:00:00.000Z");
    s_assert_format (1, "1970-01-01T00:00:00.001Z");
    s_assert_format (999, "1970-01-01T00:00:00.999Z");
    s_assert_format (1000, "1970-01-01T00:00:01.000Z");
    s_assert_format (1001, "1970-01-01T00:00:01.001Z");
    s_assert_format (59999, "1970-01-01T00:00:59.999Z");
    s_assert_format (60000, "1970-01-01T00:01:00.000Z");
    s_assert_format (-1, "1969-12-31T23:59:59.999Z");
    s_assert_format (-1000, "1969-12-31T23:59:59.000Z");
    s_assert_format (-1001, "1969-12-31T23:59:58.999Z");
    s_assert_format (1795626000123LL, "2026-11-25T17:00:00.123Z");
    s_assert_format (1709251199999LL, "2024-02-29T23:59:59.999Z");
    s_assert_format (1709251200000LL, "2024-03-01T00:00:00.000Z");
    s_assert_format (946684800000LL, "2000-01-01T00:00:00.000Z");
    s_assert_format (946684799999LL, "1999-12-31T23:59:59.999Z");
    s_assert_format (253402300799999LL, "9999-12-31T23:59:59.999Z");

    //  A small buffer is truncated, not overrun
    char small [11];
    memset (small, 'x', sizeof small);
    chat_timestamp_format (1795626000123LL, small, sizeof small);
    assert_string_equal (small, "2026-11-25");
}

//  The digit-by-digit formatter agrees with gmtime_r and snprintf on every
//  kind of instant from year 0 to 9999: the first and last millisecond of
//  each day across leap years and century rules, and pseudo-random ones
static void
s_assert_like_gmtime (int64_t ms)
{
    int64_t seconds = ms / 1000, millis = ms % 1000;
    if (millis < 0) {
        millis += 1000;
        seconds--;
    }
    time_t when = (time_t) seconds;
    struct tm tm;
    assert_non_null (gmtime_r (&when, &tm));
    char expected [64], got [64];
    snprintf (expected, sizeof expected, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
              tm.tm_hour, tm.tm_min, tm.tm_sec, (int) millis);
    chat_timestamp_format (ms, got, sizeof got);
    if (strcmp (expected, got) != 0)
        fail_msg ("%" PRId64 ": %s, not %s", ms, got, expected);
}

static void
test_timestamp_like_gmtime (void **state)
{
    (void) state;
    const int64_t first = -62167219200000LL;        //  0000-01-01T00:00:00.000Z
    const int64_t last = 253402300799999LL;         //  9999-12-31T23:59:59.999Z
    const int64_t day = 86400000LL;
    //  Both ends of every day of 1896-1904 (no 29 February in 1900),
    //  1996-2004 (one in 2000) and 2096-2104
    static const int64_t starts [] = { -2335219200000LL, 820454400000LL, 3976214400000LL };
    for (size_t k = 0; k < sizeof starts / sizeof starts [0]; k++)
        for (int64_t ms = starts [k]; ms < starts [k] + 9 * 366 * day; ms += day) {
            s_assert_like_gmtime (ms);
            s_assert_like_gmtime (ms - 1);
        }
    s_assert_like_gmtime (first);
    s_assert_like_gmtime (last);
    uint64_t x = 88172645463325252ULL;               //  xorshift64
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s_assert_like_gmtime (first + (int64_t) (x % (uint64_t) (last - first + 1)));
    }
}

static void
test_timestamp_round_trip (void **state)
{
    (void) state;
    //  Every millisecond around a second, a minute, a day and a year boundary
    const int64_t centres [] = { 0, 1795626000000LL, 1735689600000LL, 951782400000LL, 4102444800000LL };
    for (size_t c = 0; c < sizeof centres / sizeof centres [0]; c++)
        for (int64_t ms = centres [c] - 1500; ms <= centres [c] + 1500; ms++) {
            char buf [CHAT_TIMESTAMP_SIZE];
            chat_timestamp_format (ms, buf, sizeof buf);
            int64_t parsed;
            assert_int_equal (chat_timestamp_parse (buf, &parsed), 0);
            assert_int_equal (parsed, ms);
        }
    //  And a spread of times over four centuries (a day and a bit apart)
    for (int64_t ms = 0; ms < 253402300799999LL; ms += 86400000LL * 37 + 3723456) {
        char buf [CHAT_TIMESTAMP_SIZE];
        chat_timestamp_format (ms, buf, sizeof buf);
        int64_t parsed;
        assert_int_equal (chat_timestamp_parse (buf, &parsed), 0);
        assert_int_equal (parsed, ms);
    }
    //  Agrees with the C library
    time_t now = time (NULL);
    struct tm tm;
    gmtime_r (&now, &tm);
    char expected [64], buf [CHAT_TIMESTAMP_SIZE];
    strftime (expected, sizeof expected, "%Y-%m-%dT%H:%M:%S.042Z", &tm);
    chat_timestamp_format ((int64_t) now * 1000 + 42, buf, sizeof buf);
    assert_string_equal (buf, expected);
}

static void
test_timestamp_parse_malformed (void **state)
{
    (void) state;
    int64_t ms = 77;
    const char *bad [] = {
        "",
        "2026-11-25T17:00:00Z",             //  No milliseconds
        "2026-11-25T17:00:00.12Z",          //  Two digits
        "2026-11-25T17:00:00.1234Z",        //  Four digits
        "2026-11-25T17:00:00.123",          //  No Z
        "2026-11-25T17:00:00.123+00:00",    //  Offset
        "2026-11-25t17:00:00.123Z",         //  Lower case t
        "2026-11-25T17:00:00.123z",         //  Lower case z
        "2026-11-25 17:00:00.123Z",         //  Space
        "2026/11/25T17:00:00.123Z",
        "2026-11-25T17-00-00.123Z",
        "2026-11-25T17:00:00,123Z",
        "2026-13-25T17:00:00.123Z",         //  Month 13
        "2026-00-25T17:00:00.123Z",         //  Month 0
        "2026-11-00T17:00:00.123Z",         //  Day 0
        "2026-11-31T17:00:00.123Z",         //  30 days in November
        "2026-01-32T17:00:00.123Z",
        "2025-02-29T17:00:00.123Z",         //  Not a leap year
        "2100-02-29T17:00:00.123Z",         //  Not a leap year either
        "2026-11-25T24:00:00.123Z",
        "2026-11-25T17:60:00.123Z",
        "2026-11-25T17:00:60.123Z",         //  No leap seconds
        "2026-11-25T17:00:00.12aZ",
        "2026-1a-25T17:00:00.123Z",
        "+026-11-25T17:00:00.123Z",
        "-026-11-25T17:00:00.123Z",
        " 2026-11-25T17:00:00.123Z",
        "2026-11-25T17:00:00.123Z ",
        "2026-11-25T17:00:00.123ZZ",
        NULL
    };
    for (int i = 0; bad [i]; i++) {
        if (chat_timestamp_parse (bad [i], &ms) != -1)
            fail_msg ("accepted \"%s\"", bad [i]);
        assert_int_equal (ms, 77);
    }
    assert_int_equal (chat_timestamp_parse (NULL, &ms), -1);
    //  Good ones at the edges of what is valid
    assert_int_equal (chat_timestamp_parse ("2024-02-29T00:00:00.000Z", &ms), 0);
    assert_int_equal (ms, 1709164800000LL);
    assert_int_equal (chat_timestamp_parse ("2000-02-29T23:59:59.999Z", &ms), 0);
    assert_int_equal (chat_timestamp_parse ("2026-12-31T23:59:59.999Z", &ms), 0);
    assert_int_equal (chat_timestamp_parse ("1970-01-01T00:00:00.000Z", &ms), 0);
    assert_int_equal (ms, 0);
}


//  --------------------------------------------------------------------------
//  The message object

//  The writer produces the same object as chat_message_json, for content
//  with every kind of character that needs escaping
static void
test_json_writer (void **state)
{
    (void) state;
    static const char content [] = "a \"quoted\" back\\slash\ttab\nline\r\x01\x1f \xc3\xa9 \xf0\x9f\x98\x80";
    chat_message_t message = {
        .id = 9007199254740993LL, .from_user_id = 1, .to_user_id = 2, .nickname = "al.ice-_",
        .content = content, .content_len = sizeof content - 1, .created_ms = 1764090000123LL,
        .is_read = true, .client_id = NULL
    };
    chat_json_t json = { NULL, 0, 0 };
    chat_json_message (&json, &message);
    json_error_t error;
    json_t *written = json_loadb (json.data, json.len, 0, &error);
    assert_non_null (written);
    json_t *expected = chat_message_json (&message);
    assert_non_null (expected);
    assert_true (json_equal (written, expected));
    //  Exact bytes back, and the id is exact past 2^53
    json_t *got = json_object_get (written, "content");
    assert_int_equal (json_string_length (got), sizeof content - 1);
    assert_memory_equal (json_string_value (got), content, sizeof content - 1);
    assert_int_equal (json_integer_value (json_object_get (written, "message_id")), 9007199254740993LL);
    json_decref (written);
    json_decref (expected);
    //  Keys: a comma before each but the first
    json.len = 0;
    chat_json_lit (&json, "{");
    chat_json_key (&json, "a");
    chat_json_u64 (&json, 0);
    chat_json_key (&json, "b");
    chat_json_u64 (&json, UINT64_MAX);
    chat_json_lit (&json, "}");
    assert_int_equal (json.len, strlen ("{\"a\":0,\"b\":18446744073709551615}"));
    assert_memory_equal (json.data, "{\"a\":0,\"b\":18446744073709551615}", json.len);
    chat_json_release (&json);
}

static void
test_message_json (void **state)
{
    (void) state;
    const char content [] = "h\xc3\xa9llo \"w\" \\ \xf0\x9f\x98\x80\n\tend";
    chat_message_t message = {
        .id = 17,
        .from_user_id = 1,
        .to_user_id = 9007199254740993LL,       //  Above 2^53: stays exact
        .nickname = "alice",
        .content = content,
        .content_len = sizeof content - 1,
        .created_ms = 1795626000123LL,
        .is_read = false,
        .client_id = "c-1"
    };
    json_t *json = chat_message_json (&message);
    assert_non_null (json);
    assert_true (json_is_object (json));
    assert_int_equal (json_object_size (json), 7);
    assert_int_equal (json_integer_value (json_object_get (json, "message_id")), 17);
    assert_int_equal (json_integer_value (json_object_get (json, "from_user_id")), 1);
    assert_int_equal (json_integer_value (json_object_get (json, "to_user_id")), 9007199254740993LL);
    assert_string_equal (json_string_value (json_object_get (json, "nickname")), "alice");
    json_t *text = json_object_get (json, "content");
    assert_true (json_is_string (text));
    assert_int_equal (json_string_length (text), sizeof content - 1);
    assert_memory_equal (json_string_value (text), content, sizeof content - 1);
    assert_string_equal (json_string_value (json_object_get (json, "timestamp")),
                         "2026-11-25T17:00:00.123Z");
    assert_true (json_is_false (json_object_get (json, "is_read")));
    assert_null (json_object_get (json, "client_id"));

    //  Serialized and parsed back, the content is byte for byte the same
    char *dump = json_dumps (json, JSON_COMPACT);
    assert_non_null (dump);
    json_decref (json);
    json_error_t error;
    json = json_loads (dump, 0, &error);
    free (dump);
    assert_non_null (json);
    text = json_object_get (json, "content");
    assert_int_equal (json_string_length (text), sizeof content - 1);
    assert_memory_equal (json_string_value (text), content, sizeof content - 1);
    json_decref (json);

    //  Only content_len bytes are taken, and is_read true
    message.content = "hello world";
    message.content_len = 5;
    message.is_read = true;
    json = chat_message_json (&message);
    assert_non_null (json);
    assert_string_equal (json_string_value (json_object_get (json, "content")), "hello");
    assert_true (json_is_true (json_object_get (json, "is_read")));
    json_decref (json);

    //  Content that is not UTF-8 cannot be a JSON string
    message.content = "\xc0\xaf";
    message.content_len = 2;
    assert_null (chat_message_json (&message));
}


//  --------------------------------------------------------------------------
//  Nicknames and passwords

static void
test_nickname (void **state)
{
    (void) state;
    const char *good [] = {
        "abc", "ABC", "a_b", "a.b", "a-b", "___", "...", "---", "Alice_92",
        "x.Y-z_0", "012", "abcdefghijklmnopqrstuvwxyz012345",    //  32
        NULL
    };
    for (int i = 0; good [i]; i++)
        if (!chat_nickname_valid (good [i]))
            fail_msg ("refused \"%s\"", good [i]);
    const char *bad [] = {
        "", "a", "ab",
        "abcdefghijklmnopqrstuvwxyz0123456",                     //  33
        "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop",
        "ab c", " abc", "abc ", "abc!", "a@b", "a/b", "a+b", "a\tb",
        "al\xc3\xa9", "\xd0\xb0\xd0\xb1\xd0\xb2", "abc\n", "a:b", "a,b",
        NULL
    };
    for (int i = 0; bad [i]; i++)
        if (chat_nickname_valid (bad [i]))
            fail_msg ("accepted \"%s\"", bad [i]);
    assert_false (chat_nickname_valid (NULL));
}

static void
test_password (void **state)
{
    (void) state;
    char buf [300];
    memset (buf, 'p', sizeof buf);
    assert_false (chat_password_valid (buf, 0));
    assert_false (chat_password_valid (buf, 7));
    assert_true (chat_password_valid (buf, 8));
    assert_true (chat_password_valid (buf, 100));
    assert_true (chat_password_valid (buf, 256));
    assert_false (chat_password_valid (buf, 257));
    assert_false (chat_password_valid (buf, 300));
    assert_false (chat_password_valid (NULL, 10));
    //  Bytes, not characters: four 2-byte characters are 8 bytes
    assert_true (chat_password_valid ("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 8));
    assert_false (chat_password_valid ("\xc3\xa9\xc3\xa9\xc3\xa9\xc3", 7));
}


//  --------------------------------------------------------------------------
//  UTF-8

#define S_UTF8(literal) literal, sizeof (literal) - 1

static void
test_utf8 (void **state)
{
    (void) state;
    struct { const char *text; size_t len; } good [] = {
        { S_UTF8 ("") },
        { S_UTF8 ("plain ascii, long enough to use the fast path twice over") },
        { S_UTF8 ("\x7f") },
        { S_UTF8 ("\xc2\x80") },                //  U+0080, smallest 2-byte
        { S_UTF8 ("\xdf\xbf") },                //  U+07FF
        { S_UTF8 ("\xe0\xa0\x80") },            //  U+0800, smallest 3-byte
        { S_UTF8 ("\xed\x9f\xbf") },            //  U+D7FF, below surrogates
        { S_UTF8 ("\xee\x80\x80") },            //  U+E000, above surrogates
        { S_UTF8 ("\xef\xbf\xbf") },            //  U+FFFF
        { S_UTF8 ("\xf0\x90\x80\x80") },        //  U+10000, smallest 4-byte
        { S_UTF8 ("\xf4\x8f\xbf\xbf") },        //  U+10FFFF, the largest
        { S_UTF8 ("\xf0\x9f\x98\x80 emoji") },
        { S_UTF8 ("12345678\xc3\xa9" "12345678") },
        { S_UTF8 ("a\0b") },                    //  NUL is valid UTF-8
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++)
        if (!chat_utf8_valid (good [i].text, good [i].len))
            fail_msg ("refused good case %zu", i);

    struct { const char *text; size_t len; } bad [] = {
        { S_UTF8 ("\x80") },                    //  Stray continuation
        { S_UTF8 ("\xbf") },
        { S_UTF8 ("abc\x80xyz") },
        { S_UTF8 ("\xc0\xaf") },                //  Overlong '/'
        { S_UTF8 ("\xc0\x80") },                //  Overlong NUL
        { S_UTF8 ("\xc1\xbf") },                //  Overlong U+007F
        { S_UTF8 ("\xe0\x80\xaf") },            //  Overlong 3-byte
        { S_UTF8 ("\xe0\x9f\xbf") },            //  Overlong U+07FF
        { S_UTF8 ("\xf0\x80\x80\xaf") },        //  Overlong 4-byte
        { S_UTF8 ("\xf0\x8f\xbf\xbf") },        //  Overlong U+FFFF
        { S_UTF8 ("\xed\xa0\x80") },            //  U+D800 surrogate
        { S_UTF8 ("\xed\xbf\xbf") },            //  U+DFFF surrogate
        { S_UTF8 ("\xed\xa0\xbd\xed\xb8\x80") }, //  CESU-8 pair
        { S_UTF8 ("\xf4\x90\x80\x80") },        //  U+110000
        { S_UTF8 ("\xf5\x80\x80\x80") },
        { S_UTF8 ("\xf8\x88\x80\x80\x80") },    //  5-byte form
        { S_UTF8 ("\xfc\x84\x80\x80\x80\x80") }, //  6-byte form
        { S_UTF8 ("\xfe") },
        { S_UTF8 ("\xff") },
        { S_UTF8 ("\xc3") },                    //  Truncated 2-byte
        { S_UTF8 ("\xe2\x82") },                //  Truncated 3-byte
        { S_UTF8 ("\xf0\x9f\x98") },            //  Truncated 4-byte
        { S_UTF8 ("\xf0\x9f\x98" "a") },        //  Broken by ASCII
        { S_UTF8 ("\xc3\xc3\xa9") },
        { S_UTF8 ("12345678901234567\xe2\x82") },   //  Truncated after the fast path
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        if (chat_utf8_valid (bad [i].text, bad [i].len))
            fail_msg ("accepted bad case %zu", i);

    //  The length is what counts: a truncation inside the buffer is caught
    assert_false (chat_utf8_valid ("\xc3\xa9", 1));
    assert_true (chat_utf8_valid ("\xc3\xa9 trailing junk \xff", 2));
    assert_true (chat_utf8_valid (NULL, 0));
    assert_false (chat_utf8_valid (NULL, 1));

    //  Every code point, encoded by hand, is accepted exactly when valid
    for (uint32_t cp = 0; cp <= 0x10FFFF; cp += (cp < 0x11000 ? 1 : 61)) {
        unsigned char buf [4];
        size_t n;
        if (cp < 0x80) { buf [0] = (unsigned char) cp; n = 1; }
        else
        if (cp < 0x800) {
            buf [0] = (unsigned char) (0xC0 | (cp >> 6));
            buf [1] = (unsigned char) (0x80 | (cp & 0x3F));
            n = 2;
        }
        else
        if (cp < 0x10000) {
            buf [0] = (unsigned char) (0xE0 | (cp >> 12));
            buf [1] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
            buf [2] = (unsigned char) (0x80 | (cp & 0x3F));
            n = 3;
        }
        else {
            buf [0] = (unsigned char) (0xF0 | (cp >> 18));
            buf [1] = (unsigned char) (0x80 | ((cp >> 12) & 0x3F));
            buf [2] = (unsigned char) (0x80 | ((cp >> 6) & 0x3F));
            buf [3] = (unsigned char) (0x80 | (cp & 0x3F));
            n = 4;
        }
        bool surrogate = cp >= 0xD800 && cp <= 0xDFFF;
        assert_int_equal (chat_utf8_valid ((const char *) buf, n), !surrogate);
    }
}


//  --------------------------------------------------------------------------
//  Message content

static void
test_content (void **state)
{
    (void) state;
    const size_t max = 4096;
    struct { const char *text; size_t len; } good [] = {
        { S_UTF8 ("hello") },
        { S_UTF8 ("x") },
        { S_UTF8 ("  padded  ") },
        { S_UTF8 ("line one\nline two\r\n\tindented") },
        { S_UTF8 ("\xf0\x9f\x98\x80") },                //  Emoji alone
        { S_UTF8 ("\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb") },  //  ZWJ sequence
        { S_UTF8 ("caf\xc3\xa9") },
        { S_UTF8 ("\xe4\xbd\xa0\xe5\xa5\xbd") },        //  CJK
        { S_UTF8 ("\xc2\xa0" "a" "\xc2\xa0") },         //  NBSP around text
        { S_UTF8 ("<script>alert(1)</script>") },      //  Just text
        { S_UTF8 ("\xc2\xa1") },                        //  U+00A1, after C1
        { S_UTF8 ("\x7e") },                            //  '~', before DEL
    };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++)
        if (!chat_content_valid (good [i].text, good [i].len, max))
            fail_msg ("refused good case %zu", i);

    struct { const char *text; size_t len; } bad [] = {
        { S_UTF8 ("") },
        { S_UTF8 (" ") },
        { S_UTF8 ("   \t\r\n  ") },
        { S_UTF8 ("\xc2\xa0") },                        //  NBSP
        { S_UTF8 ("\xe2\x80\x80\xe2\x80\x8a") },        //  U+2000, U+200A
        { S_UTF8 ("\xe3\x80\x80") },                    //  Ideographic space
        { S_UTF8 ("\xe2\x80\xaf\xe2\x81\x9f") },        //  U+202F, U+205F
        { S_UTF8 ("\xe2\x80\xa8\xe2\x80\xa9") },        //  Line/paragraph sep.
        { S_UTF8 ("\xe1\x9a\x80") },                    //  Ogham space
        { S_UTF8 ("\xef\xbb\xbf") },                    //  BOM / ZWNBSP
        { S_UTF8 ("\xe2\x80\x8b \xe2\x80\x8b") },       //  Zero-width spaces
        { S_UTF8 ("\xe2\x81\xa0") },                    //  Word joiner
        { S_UTF8 ("a\0b") },                            //  NUL
        { S_UTF8 ("a\x01" "b") },
        { S_UTF8 ("\x1b[31mred") },                     //  ESC
        { S_UTF8 ("a\x0b" "b") },                       //  Vertical tab
        { S_UTF8 ("a\x0c" "b") },                       //  Form feed
        { S_UTF8 ("a\x1f" "b") },
        { S_UTF8 ("a\x7f" "b") },                       //  DEL
        { S_UTF8 ("a\xc2\x80" "b") },                   //  U+0080
        { S_UTF8 ("a\xc2\x85" "b") },                   //  U+0085 NEL
        { S_UTF8 ("a\xc2\x9f" "b") },                   //  U+009F
        { S_UTF8 ("\xc0\xaf") },                        //  Overlong
        { S_UTF8 ("ok \xed\xa0\x80") },                 //  Surrogate
        { S_UTF8 ("ok \xf4\x90\x80\x80") },             //  Above U+10FFFF
        { S_UTF8 ("ok \xe2\x82") },                     //  Truncated
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++)
        if (chat_content_valid (bad [i].text, bad [i].len, max))
            fail_msg ("accepted bad case %zu", i);
    assert_false (chat_content_valid (NULL, 0, max));
    assert_false (chat_content_valid (NULL, 3, max));

    //  Exactly max bytes is fine, one more is not
    char *buf = (char *) malloc (max + 8);
    memset (buf, 'a', max + 8);
    assert_true (chat_content_valid (buf, max, max));
    assert_false (chat_content_valid (buf, max + 1, max));
    //  ... also when the last character is multi-byte
    memcpy (buf + max - 4, "\xf0\x9f\x98\x80", 4);
    assert_true (chat_content_valid (buf, max, max));
    //  ... and a multi-byte character cut by the length is invalid
    assert_false (chat_content_valid (buf, max - 1, max));
    //  A long run of spaces with one letter at the very end is content
    memset (buf, ' ', max);
    buf [max - 1] = 'z';
    assert_true (chat_content_valid (buf, max, max));
    buf [max - 1] = ' ';
    assert_false (chat_content_valid (buf, max, max));
    free (buf);
    //  Limits other than the default
    assert_true (chat_content_valid ("a", 1, 1));
    assert_false (chat_content_valid ("ab", 2, 1));
    assert_false (chat_content_valid ("\xc3\xa9", 2, 1));
}

//  The writer copies runs of plain bytes eight at a time: each byte that
//  needs escaping, at each position of a 24-byte string, comes back
//  exactly after a round trip through jansson
static void
test_json_string_every_position (void **state)
{
    (void) state;
    static const char *special [] = {
        "\"", "\\", "\n", "\r", "\t", "\x01", "\x1f", "\x7f", "\xc3\xa9", "\xf0\x9f\x98\x80"
    };
    chat_json_t json = { NULL, 0, 0 };
    for (size_t k = 0; k < sizeof special / sizeof special [0]; k++)
        for (size_t pos = 0; pos < 24; pos++) {
            char text [32];
            memset (text, 'a', sizeof text);
            size_t n = strlen (special [k]);
            memcpy (text + pos, special [k], n);
            size_t len = 24 + n;
            json.len = 0;
            chat_json_string (&json, text, len);
            json_error_t error;
            json_t *back = json_loadb (json.data, json.len, JSON_DECODE_ANY, &error);
            if (!back || !json_is_string (back) || json_string_length (back) != len
            ||  memcmp (json_string_value (back), text, len) != 0)
                fail_msg ("special %zu at %zu: %.*s", k, pos, (int) json.len, json.data);
            json_decref (back);
        }
    chat_json_release (&json);
}

//  The content check reads printable ASCII eight bytes at a time: a
//  forbidden byte is found at every position, and spaces alone are not
//  content wherever the one visible character is
static void
test_content_every_position (void **state)
{
    (void) state;
    static const unsigned char forbidden [] = { 0x00, 0x01, 0x0b, 0x1f, 0x7f, 0x80, 0xff };
    char text [24];
    for (size_t k = 0; k < sizeof forbidden; k++)
        for (size_t pos = 0; pos < sizeof text; pos++) {
            memset (text, 'a', sizeof text);
            text [pos] = (char) forbidden [k];
            if (chat_content_valid (text, sizeof text, 4096))
                fail_msg ("accepted byte 0x%02x at %zu", forbidden [k], pos);
        }
    for (size_t pos = 0; pos < sizeof text; pos++) {
        memset (text, ' ', sizeof text);
        assert_false (chat_content_valid (text, sizeof text, 4096));
        text [pos] = 'x';
        assert_true (chat_content_valid (text, sizeof text, 4096));
        text [pos] = '\t';
        assert_false (chat_content_valid (text, sizeof text, 4096));
        //  Tab, line feed and carriage return are allowed among text
        text [(pos + 1) % sizeof text] = '~';
        assert_true (chat_content_valid (text, sizeof text, 4096));
    }
}

int
main (void)
{
    const struct CMUnitTest tests [] = {
        cmocka_unit_test (test_now_ms),
        cmocka_unit_test (test_timestamp_format),
        cmocka_unit_test (test_timestamp_like_gmtime),
        cmocka_unit_test (test_timestamp_round_trip),
        cmocka_unit_test (test_timestamp_parse_malformed),
        cmocka_unit_test (test_message_json),
        cmocka_unit_test (test_json_writer),
        cmocka_unit_test (test_nickname),
        cmocka_unit_test (test_password),
        cmocka_unit_test (test_utf8),
        cmocka_unit_test (test_content),
        cmocka_unit_test (test_content_every_position),
        cmocka_unit_test (test_json_string_every_position),
    };
    return cmocka_run_group_tests (tests, NULL, NULL);
}
