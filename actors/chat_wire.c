/*  =========================================================================
    chat_wire.c - client-facing formats shared by the actors (chat_wire.h)

    Timestamps, the protocol's message object, and the validation rules for
    nicknames, passwords and message content (docs/protocol.md). Pure
    functions: no state, talks to no actor. Used by ws-front, auth,
    persistence and hub.
    =========================================================================
*/

#include "chat_wire.h"
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


//  --------------------------------------------------------------------------
//  Current time in milliseconds since the epoch (wall clock, UTC)

int64_t
chat_now_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


//  --------------------------------------------------------------------------
//  Timestamps: "2026-11-25T17:00:00.123Z"

//  The proleptic Gregorian date of a day counted from 1970-01-01 (Howard
//  Hinnant's civil_from_days: eras of 400 years, March-based years)
static void
s_civil_from_days (int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
    days += 719468;                     //  From 0000-03-01
    int64_t era = (days >= 0? days: days - 146096) / 146097;
    unsigned day_of_era = (unsigned) (days - era * 146097);
    unsigned year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36524
                            - day_of_era / 146096) / 365;
    unsigned day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    unsigned march_month = (5 * day_of_year + 2) / 153;
    *day = day_of_year - (153 * march_month + 2) / 5 + 1;
    *month = march_month < 10? march_month + 3: march_month - 9;
    *year = (int64_t) year_of_era + era * 400 + (*month <= 2);
}

//  value as exactly width decimal digits
static void
s_put_digits (char *out, unsigned value, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        out [i] = (char) ('0' + value % 10);
        value /= 10;
    }
}

void
chat_timestamp_format (int64_t ms, char *buf, size_t size)
{
    assert (buf);
    assert (size > 0);
    //  Floor division, so that times before 1970 format correctly too
    int64_t seconds = ms / 1000;
    int64_t millis = ms % 1000;
    if (millis < 0) {
        millis += 1000;
        seconds--;
    }
    int64_t days = seconds / 86400;
    int64_t second_of_day = seconds % 86400;
    if (second_of_day < 0) {
        second_of_day += 86400;
        days--;
    }
    int64_t year;
    unsigned month, day;
    s_civil_from_days (days, &year, &month, &day);
    if (year < 0 || year > 9999 || size < sizeof "YYYY-MM-DDTHH:MM:SS.mmmZ") {
        //  The rare case, as printf would have it
        time_t when = (time_t) seconds;
        struct tm tm;
        if (!gmtime_r (&when, &tm)) {
            buf [0] = 0;
            return;
        }
        snprintf (buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                  tm.tm_hour, tm.tm_min, tm.tm_sec, (int) millis);
        return;
    }
    //  Every message carries one: written digit by digit, not by snprintf
    //  and gmtime_r (5 % of a history page's CPU)
    unsigned hms = (unsigned) second_of_day;
    s_put_digits (buf, (unsigned) year, 4);
    buf [4] = '-';
    s_put_digits (buf + 5, month, 2);
    buf [7] = '-';
    s_put_digits (buf + 8, day, 2);
    buf [10] = 'T';
    s_put_digits (buf + 11, hms / 3600, 2);
    buf [13] = ':';
    s_put_digits (buf + 14, hms / 60 % 60, 2);
    buf [16] = ':';
    s_put_digits (buf + 17, hms % 60, 2);
    buf [19] = '.';
    s_put_digits (buf + 20, (unsigned) millis, 3);
    buf [23] = 'Z';
    buf [24] = 0;
}

//  Read exactly `digits` decimal digits
static bool
s_digits (const char *text, int digits, int *value)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (text [i] < '0' || text [i] > '9')
            return false;
        v = v * 10 + (text [i] - '0');
    }
    *value = v;
    return true;
}

//  Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
//  days_from_civil)
static int64_t
s_days_from_civil (int64_t year, int month, int day)
{
    year -= month <= 2;
    int64_t era = (year >= 0 ? year : year - 399) / 400;
    int64_t yoe = year - era * 400;
    int64_t doy = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int
chat_timestamp_parse (const char *text, int64_t *ms)
{
    assert (ms);
    //  0123456789012345678901234
    //  2026-11-25T17:00:00.123Z
    if (!text || strlen (text) != 24
    ||  text [4] != '-' || text [7] != '-' || text [10] != 'T'
    ||  text [13] != ':' || text [16] != ':' || text [19] != '.' || text [23] != 'Z')
        return -1;
    int year, month, day, hour, minute, second, millis;
    if (!s_digits (text, 4, &year)
    ||  !s_digits (text + 5, 2, &month)
    ||  !s_digits (text + 8, 2, &day)
    ||  !s_digits (text + 11, 2, &hour)
    ||  !s_digits (text + 14, 2, &minute)
    ||  !s_digits (text + 17, 2, &second)
    ||  !s_digits (text + 20, 3, &millis))
        return -1;
    static const int s_month_days [12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (month < 1 || month > 12 || day < 1 || day > s_month_days [month - 1]
    ||  (month == 2 && day == 29 && !leap)
    ||  hour > 23 || minute > 59 || second > 59)
        return -1;
    int64_t days = s_days_from_civil (year, month, day);
    *ms = ((days * 24 + hour) * 60 + minute) * 60000 + (int64_t) second * 1000 + millis;
    return 0;
}


//  --------------------------------------------------------------------------
//  The message object of the protocol. Returns NULL if the content is not
//  valid UTF-8 (it is validated before it is stored, so that is a bug or a
//  damaged database).

json_t *
chat_message_json (const chat_message_t *message)
{
    assert (message);
    char timestamp [CHAT_TIMESTAMP_SIZE];
    chat_timestamp_format (message->created_ms, timestamp, sizeof timestamp);
    json_t *content = json_stringn (message->content ? message->content : "",
                                    message->content ? message->content_len : 0);
    json_t *nickname = json_string (message->nickname ? message->nickname : "");
    json_t *object = json_object ();
    if (!content || !nickname || !object) {
        json_decref (content);
        json_decref (nickname);
        json_decref (object);
        return NULL;
    }
    if (json_object_set_new (object, "message_id", json_integer (message->id))
    ||  json_object_set_new (object, "from_user_id", json_integer (message->from_user_id))
    ||  json_object_set_new (object, "to_user_id", json_integer (message->to_user_id))
    ||  json_object_set_new (object, "nickname", nickname)
    ||  json_object_set_new (object, "content", content)
    ||  json_object_set_new (object, "timestamp", json_string (timestamp))
    ||  json_object_set_new (object, "is_read", json_boolean (message->is_read)))
        json_decref (object), object = NULL;
    return object;
}


//  --------------------------------------------------------------------------
//  JSON writer

static void
s_json_reserve (chat_json_t *json, size_t more)
{
    if (json->len + more > json->cap) {
        size_t cap = json->cap ? json->cap : 1024;
        while (cap < json->len + more)
            cap *= 2;
        char *data = (char *) realloc (json->data, cap);
        assert (data);
        json->data = data;
        json->cap = cap;
    }
}

void
chat_json_release (chat_json_t *json)
{
    free (json->data);
    json->data = NULL;
    json->len = json->cap = 0;
}

void
chat_json_raw (chat_json_t *json, const char *text, size_t len)
{
    s_json_reserve (json, len);
    if (len)
        memcpy (json->data + json->len, text, len);
    json->len += len;
}

void
chat_json_lit (chat_json_t *json, const char *text)
{
    chat_json_raw (json, text, strlen (text));
}

//  Eight bytes at a time (exact: a word passes only if no byte matches)
#define S_ONES      0x0101010101010101ULL
#define S_HIGHS     0x8080808080808080ULL
//  Some byte of word is zero
#define S_HAS_ZERO(word)        (((word) - S_ONES) & ~(word) & S_HIGHS)
//  Some byte of word is below n (n <= 128)
#define S_HAS_LESS(word, n)     (((word) - S_ONES * (n)) & ~(word) & S_HIGHS)
//  Some byte of word is c
#define S_HAS_BYTE(word, c)     S_HAS_ZERO ((word) ^ (S_ONES * (c)))

//  A byte that a JSON string holds as it is: not a quote, a backslash or
//  a C0 control (bytes of UTF-8 sequences are copied unchanged)
static inline bool
s_json_plain (char byte)
{
    unsigned char c = (unsigned char) byte;
    return c >= 0x20 && c != '"' && c != '\\';
}

//  Eight such bytes
static inline bool
s_json_plain8 (const char *bytes)
{
    uint64_t word;
    memcpy (&word, bytes, sizeof word);
    return !(S_HAS_LESS (word, 0x20) | S_HAS_BYTE (word, '"') | S_HAS_BYTE (word, '\\'));
}

void
chat_json_string (chat_json_t *json, const char *text, size_t len)
{
    static const char hex [] = "0123456789abcdef";
    s_json_reserve (json, len * 6 + 2);
    char *out = json->data + json->len;
    *out++ = '"';
    size_t i = 0;
    while (i < len) {
        //  A run of bytes that go out as they are, copied in one go
        size_t run = i;
        while (run + 8 <= len && s_json_plain8 (text + run))
            run += 8;
        while (run < len && s_json_plain (text [run]))
            run++;
        memcpy (out, text + i, run - i);
        out += run - i;
        if (run == len)
            break;
        unsigned char c = (unsigned char) text [run];
        i = run + 1;
        if (c == '"' || c == '\\') {
            *out++ = '\\';
            *out++ = (char) c;
        }
        else {
            const char *short_ = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (short_) {
                memcpy (out, short_, 2);
                out += 2;
            }
            else {
                memcpy (out, "\\u00", 4);
                out [4] = hex [c >> 4];
                out [5] = hex [c & 15];
                out += 6;
            }
        }
    }
    *out++ = '"';
    json->len = (size_t) (out - json->data);
}

char *
chat_u64_digits (uint64_t value, char *end)
{
    char *digit = end;
    do
        *--digit = (char) ('0' + value % 10);
    while (value /= 10);
    return digit;
}

void
chat_json_u64 (chat_json_t *json, uint64_t value)
{
    char digits [24];
    char *end = digits + sizeof digits;
    char *first = chat_u64_digits (value, end);
    chat_json_raw (json, first, (size_t) (end - first));
}

void
chat_json_key (chat_json_t *json, const char *key)
{
    bool first = json->len == 0 || json->data [json->len - 1] == '{';
    if (!first)
        chat_json_raw (json, ",", 1);
    chat_json_string (json, key, strlen (key));
    chat_json_raw (json, ":", 1);
}

void
chat_json_message (chat_json_t *json, const chat_message_t *message)
{
    char timestamp [CHAT_TIMESTAMP_SIZE];
    chat_timestamp_format (message->created_ms, timestamp, sizeof timestamp);
    chat_json_lit (json, "{");
    chat_json_key (json, "message_id");
    chat_json_u64 (json, (uint64_t) message->id);
    chat_json_key (json, "from_user_id");
    chat_json_u64 (json, (uint64_t) message->from_user_id);
    chat_json_key (json, "to_user_id");
    chat_json_u64 (json, (uint64_t) message->to_user_id);
    chat_json_key (json, "nickname");
    chat_json_string (json, message->nickname ? message->nickname : "",
                      message->nickname ? strlen (message->nickname) : 0);
    chat_json_key (json, "content");
    chat_json_string (json, message->content ? message->content : "",
                      message->content ? message->content_len : 0);
    chat_json_key (json, "timestamp");
    chat_json_string (json, timestamp, strlen (timestamp));
    chat_json_key (json, "is_read");
    chat_json_lit (json, message->is_read ? "true}" : "false}");
}


//  --------------------------------------------------------------------------
//  Nicknames and passwords

bool
chat_nickname_valid (const char *nickname)
{
    if (!nickname)
        return false;
    size_t len = 0;
    for (const char *p = nickname; *p; p++, len++) {
        char c = *p;
        if (len >= 32)
            return false;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
        ||    c == '_' || c == '.' || c == '-'))
            return false;
    }
    return len >= 3;
}

bool
chat_password_valid (const char *password, size_t len)
{
    return password && len >= 8 && len <= 256;
}


//  --------------------------------------------------------------------------
//  UTF-8 (RFC 3629)

//  Decode one code point at text [0..len); returns its length in bytes, or
//  0 if the sequence is malformed (overlong, surrogate, above U+10FFFF,
//  truncated, or a stray continuation byte).
static size_t
s_utf8_decode (const unsigned char *text, size_t len, uint32_t *code)
{
    unsigned char c = text [0];
    if (c < 0x80) {
        *code = c;
        return 1;
    }
    size_t need;
    uint32_t value, least;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2; value = c & 0x1F; least = 0x80;
    }
    else
    if (c >= 0xE0 && c <= 0xEF) {
        need = 3; value = c & 0x0F; least = 0x800;
    }
    else
    if (c >= 0xF0 && c <= 0xF4) {
        need = 4; value = c & 0x07; least = 0x10000;
    }
    else
        return 0;               //  Continuation byte, C0/C1 or F5..FF lead
    if (len < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((text [i] & 0xC0) != 0x80)
            return 0;
        value = (value << 6) | (text [i] & 0x3F);
    }
    if (value < least || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF))
        return 0;
    *code = value;
    return need;
}

bool
chat_utf8_valid (const char *text, size_t len)
{
    if (len && !text)
        return false;
    const unsigned char *p = (const unsigned char *) text;
    size_t i = 0;
    while (i < len) {
        //  Fast path: eight ASCII bytes at a time
        while (i + 8 <= len) {
            uint64_t word;
            memcpy (&word, p + i, sizeof word);
            if (word & 0x8080808080808080ULL)
                break;
            i += 8;
        }
        if (i >= len)
            break;
        if (p [i] < 0x80) {
            i++;
            continue;
        }
        uint32_t code;
        size_t n = s_utf8_decode (p + i, len - i, &code);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}


//  --------------------------------------------------------------------------
//  Message content

//  White space, and the invisible characters that would make a message
//  look empty: Unicode White_Space, plus U+180E, U+200B..U+200F, U+2060..
//  U+2064 and U+FEFF. They are allowed inside content, just not alone.
static bool
s_blank (uint32_t code)
{
    return code == 0x09 || code == 0x0A || code == 0x0B || code == 0x0C || code == 0x0D
        || code == 0x20 || code == 0x85 || code == 0xA0 || code == 0x1680
        || code == 0x180E
        || (code >= 0x2000 && code <= 0x200F)
        || code == 0x2028 || code == 0x2029 || code == 0x202F || code == 0x205F
        || (code >= 0x2060 && code <= 0x2064)
        || code == 0x3000 || code == 0xFEFF;
}

//  C0 controls other than tab, line feed and carriage return; DEL; C1
static bool
s_control (uint32_t code)
{
    if (code < 0x20)
        return code != '\t' && code != '\n' && code != '\r';
    return code >= 0x7F && code <= 0x9F;
}

bool
chat_content_valid (const char *content, size_t len, size_t max_bytes)
{
    if (!content || len == 0 || len > max_bytes)
        return false;
    const unsigned char *p = (const unsigned char *) content;
    bool visible = false;
    size_t i = 0;
    while (i < len) {
        //  Fast paths: printable ASCII (0x20..0x7E), eight bytes at a
        //  time, then one; visible unless it is all spaces
        uint64_t word;
        if (i + 8 <= len
        &&  (memcpy (&word, p + i, sizeof word),
             !((word & S_HIGHS) | S_HAS_LESS (word, 0x20) | S_HAS_BYTE (word, 0x7F)))) {
            visible |= word != S_ONES * ' ';
            i += 8;
            continue;
        }
        if (p [i] >= 0x20 && p [i] < 0x7F) {
            visible |= p [i] != ' ';
            i++;
            continue;
        }
        uint32_t code;
        size_t n = s_utf8_decode (p + i, len - i, &code);
        if (n == 0 || s_control (code))
            return false;
        if (!visible && !s_blank (code))
            visible = true;
        i += n;
    }
    return visible;
}
