//! Go and daprd parsing rules the sidecar must reproduce byte for byte: Go's `time.ParseDuration`
//! and `strconv` integer parsing with their error texts, dapr/kit's case-insensitive metadata lookup,
//! components-contrib's `TryGetTTL`, daprd's W3C `traceparent` parsing and otel-go's `tracestate`
//! parsing (both re-serialised as daprd passes them on), and daprd's resiliency durations and retry
//! status-code patterns. Each function names the Go source it mirrors. Go's quirks (wrapping integer
//! arithmetic, truncating casts, float rounding of fractions) are kept on purpose, because apps and
//! test suites written against daprd observe them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// `1 << 63`: the bound Go's `time.ParseDuration` checks its unsigned accumulator against.
const NANOS_LIMIT: u64 = 1 << 63;

/// The nanoseconds in one of `time.ParseDuration`'s units (Go's `unitMap`).
fn duration_unit(unit: &str) -> Option<u64> {
    match unit {
        "ns" => Some(1),
        // U+00B5 is the micro sign, U+03BC the Greek letter mu: Go accepts both.
        "us" | "\u{b5}s" | "\u{3bc}s" => Some(1_000),
        "ms" => Some(1_000_000),
        "s" => Some(1_000_000_000),
        "m" => Some(60_000_000_000),
        "h" => Some(3_600_000_000_000),
        _ => None,
    }
}

/// Go's `time.ParseDuration`, as signed nanoseconds.
///
/// `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0` alone (with an optional sign). The errors are Go's:
/// `time: invalid duration "x"`, `time: missing unit in duration "x"` and
/// `time: unknown unit "u" in duration "x"`, quoted as Go's `time.quote` does. A fraction adds
/// `uint64(float64(f) * (float64(unit) / scale))`, so it is truncated as in Go; digits beyond
/// what fits in 63 bits are ignored. `-9223372036854775808ns` is accepted, `9223372036854775808ns`
/// is not. Go's accumulator wraps when two components of exactly 2^63 ns are added, and that is
/// kept too (`9223372036854775808ns9223372036854775808ns` is 0).
pub(crate) fn parse_go_duration(orig: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration {}", go_time_quote(orig));
    let b = orig.as_bytes();
    let mut i = 0;
    let mut neg = false;
    if let Some(&c) = b.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        i = 1;
    }
    // Every boundary below sits next to an ASCII byte, so slicing `orig` at them is safe.
    let rest = &orig[i..];
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let starts_number = |c: u8| c == b'.' || c.is_ascii_digit();
    let mut d: u64 = 0;
    while i < b.len() {
        // The next character must be [0-9.].
        if !starts_number(b[i]) {
            return Err(invalid());
        }
        // leadingInt: [0-9]*, an overflow is an error.
        let int_start = i;
        let mut v: u64 = 0;
        while i < b.len() && b[i].is_ascii_digit() {
            if v > NANOS_LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(b[i] - b'0');
            if v > NANOS_LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        let pre = i != int_start;
        // leadingFraction: (\.[0-9]*)?, which stops accumulating (without error) on overflow.
        let mut f: u64 = 0;
        let mut scale: f64 = 1.0;
        let mut post = false;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let frac_start = i;
            let mut overflow = false;
            while i < b.len() && b[i].is_ascii_digit() {
                if !overflow {
                    if f > (NANOS_LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(b[i] - b'0');
                        if y > NANOS_LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            post = i != frac_start;
        }
        if !pre && !post {
            // No digits at all, e.g. ".s" or "-.s".
            return Err(invalid());
        }
        // The unit runs up to the next '.' or digit, whatever it contains.
        let unit_start = i;
        while i < b.len() && !starts_number(b[i]) {
            i += 1;
        }
        if i == unit_start {
            return Err(format!("time: missing unit in duration {}", go_time_quote(orig)));
        }
        let unit_text = &orig[unit_start..i];
        let Some(unit) = duration_unit(unit_text) else {
            return Err(format!("time: unknown unit {} in duration {}", go_time_quote(unit_text), go_time_quote(orig)));
        };
        if v > NANOS_LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go computes the fraction in float64 and truncates; the product is below `unit`.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > NANOS_LIMIT {
                return Err(invalid());
            }
        }
        // Go's uint64 addition wraps (only reachable with two components of exactly 2^63).
        d = d.wrapping_add(v);
        if d > NANOS_LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // -Duration(d): 2^63 becomes i64::MIN, as in Go.
        return Ok(0i64.wrapping_sub_unsigned(d));
    }
    i64::try_from(d).map_err(|_| invalid())
}

/// Go's `time.quote` (the quoting in `time.ParseDuration` errors): ASCII from space up (DEL
/// included) is kept, `"` and `\` are escaped, and every byte of any other character is `\xNN`.
fn go_time_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c.is_ascii() && c >= ' ' {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for byte in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }
    }
    out.push('"');
    out
}

/// Go's `strconv.Quote` (what `%q` prints), for valid UTF-8.
///
/// Go keeps the characters `unicode.IsPrint` accepts; we approximate that for non-ASCII as "not a
/// control, not white space, not a format or private-use character, not a noncharacter".
/// Unassigned code points (which Go escapes) are kept, and the Unicode versions may differ.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ if go_is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            _ if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            _ if u32::from(c) < 0x1_0000 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            _ => {
                let _ = write!(out, "\\U{:08x}", u32::from(c));
            }
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint` (letters, marks, numbers, punctuation, symbols and
/// the ASCII space); see [`go_quote`].
fn go_is_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let cp = u32::from(c);
    // Format (Cf), private use (Co) and noncharacters; Rust's `is_whitespace` covers Zs, Zl and Zp.
    let format_or_private = matches!(
        cp,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFDD0..=0xFDEF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            | 0xE000..=0xF8FF
            | 0xF_0000..=0xF_FFFD
            | 0x10_0000..=0x10_FFFD
    ) || (cp & 0xFFFE) == 0xFFFE;
    !(c.is_control() || c.is_whitespace() || format_or_private)
}

/// Why Go's `strconv.ParseInt(s, 10, 64)` (and `strconv.Atoi` on 64-bit) refused a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GoIntError {
    /// `strconv.ErrSyntax`.
    Syntax,
    /// `strconv.ErrRange`.
    Range,
}

impl GoIntError {
    fn text(self) -> &'static str {
        match self {
            Self::Syntax => "invalid syntax",
            Self::Range => "value out of range",
        }
    }
}

/// Go's `strconv.ParseInt(s, 10, 64)`: an optional `+` or `-`, then ASCII digits only (no
/// underscores in base 10, no spaces). The first bad digit or the first overflow, scanning left to
/// right, decides between a syntax and a range error, as in Go's `ParseUint` loop.
fn go_parse_int(s: &str) -> Result<i64, GoIntError> {
    // ParseUint with bitSize 64: cutoff = maxUint64/10 + 1.
    const CUTOFF: u64 = u64::MAX / 10 + 1;
    let b = s.as_bytes();
    let (neg, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, b),
    };
    if digits.is_empty() {
        return Err(GoIntError::Syntax);
    }
    let mut n: u64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return Err(GoIntError::Syntax);
        }
        if n >= CUTOFF {
            return Err(GoIntError::Range);
        }
        n = n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))).ok_or(GoIntError::Range)?;
    }
    if neg {
        if n > NANOS_LIMIT {
            return Err(GoIntError::Range);
        }
        Ok(0i64.wrapping_sub_unsigned(n))
    } else {
        i64::try_from(n).map_err(|_| GoIntError::Range)
    }
}

/// The text of the error `strconv.Atoi(s)` returns.
fn go_atoi_error(s: &str, e: GoIntError) -> String {
    format!("strconv.Atoi: parsing {}: {}", go_quote(s), e.text())
}

/// Go's `strings.ToLower`: the simple (one-to-one) Unicode lower-case mapping. Rust's
/// `to_lowercase` differs only for U+0130, which it expands to two characters and Go maps to `i`;
/// Go also has no final-sigma rule.
fn go_to_lower(s: &str) -> String {
    s.chars().map(|c| if c == '\u{130}' { 'i' } else { c.to_lowercase().next().unwrap_or(c) }).collect()
}

/// dapr/kit `metadata.GetMetadataProperty` (identical to contrib's copy): the value of the first
/// of `keys` (in priority order) that some property matches case-insensitively, `Some("")`
/// included.
///
/// Go lowers every property name into a fresh map; when two names differ only in case, the one
/// that survives depends on Go's random map order. We pick the last in `BTreeMap` order (for
/// `TTL` and `ttl`, that is `ttl`).
pub(crate) fn get_metadata_property<'a>(props: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    let lowered: Vec<(String, &'a str)> = props.iter().map(|(k, v)| (go_to_lower(k), v.as_str())).collect();
    keys.iter().find_map(|key| {
        let want = go_to_lower(key);
        lowered.iter().rev().find(|(k, _)| *k == want).map(|&(_, v)| v)
    })
}

/// components-contrib v1.18.4 `metadata.TryGetTTL`, as nanoseconds (`Ok(Some(n))` with `n >= 0`;
/// `Ok(None)` for Go's `ok == false`).
///
/// The value of `ttl`, else `ttlInSeconds` (case-insensitive; a present but empty `ttl` wins and
/// means no TTL). It is read as a Go duration first, a negative one clamped to 0 (so `0`, `0s` and
/// `-5s` are all `Some(0)`). Otherwise it must be a decimal integer of seconds above zero:
/// `ttl value must be a valid integer: actual is 'x'`, or
/// `ttl value must be higher than zero: actual is '-5'` (the parsed number, so `-05` prints `-5`).
/// Seconds are multiplied into nanoseconds with Go's wrapping `int64` arithmetic, and only a
/// negative product becomes `i64::MAX`: a wrap that lands on a positive value is kept, as in Go.
pub(crate) fn try_get_ttl(props: &BTreeMap<String, String>) -> Result<Option<i64>, String> {
    let val = get_metadata_property(props, &["ttl", "ttlInSeconds"]).unwrap_or_default();
    if val.is_empty() {
        return Ok(None);
    }
    if let Ok(d) = parse_go_duration(val) {
        return Ok(Some(d.max(0)));
    }
    let Ok(secs) = go_parse_int(val) else {
        return Err(format!("ttl value must be a valid integer: actual is '{val}'"));
    };
    if secs <= 0 {
        return Err(format!("ttl value must be higher than zero: actual is '{secs}'"));
    }
    let nanos = secs.wrapping_mul(1_000_000_000);
    Ok(Some(if nanos < 0 { i64::MAX } else { nanos }))
}

/// The highest `traceparent` version daprd accepts (`diagConsts.MaxVersion`); `ff` is invalid.
const TRACEPARENT_MAX_VERSION: u8 = 254;

/// dapr v1.18.3 `diag.SpanContextFromW3CString`, then `SpanContextToW3CString`: the
/// `traceparent` daprd passes on, or `None` when it rejects the header.
///
/// The header is split on every `-`; at least 4 sections, exactly 4 for version `00`. The version
/// is 2 hex digits (Go's `hex.DecodeString`, so upper case is accepted there) and at most `fe`.
/// The trace id (32) and span id (16) are lower-case hex only (otel's `TraceIDFromHex` and
/// `SpanIDFromHex`) and not all zero. The flags section is any non-empty, even-length hex string
/// (either case), of which only the first byte counts. Re-serialised, the version is always `00`
/// and the flags are two lower-case hex digits: `01-<tid>-<sid>-01-xyz` gives `00-<tid>-<sid>-01`.
pub(crate) fn normalise_traceparent(h: &str) -> Option<String> {
    // An empty header splits into one section, so it is rejected with the short ones.
    let sections: Vec<&str> = h.split('-').collect();
    let [version, trace_id, span_id, flags, rest @ ..] = sections.as_slice() else {
        return None;
    };
    if version.len() != 2 {
        return None;
    }
    let version = go_hex_first_byte(version)?;
    if version > TRACEPARENT_MAX_VERSION || (version == 0 && !rest.is_empty()) {
        return None;
    }
    if !is_w3c_id(trace_id, 32) || !is_w3c_id(span_id, 16) {
        return None;
    }
    let flags = go_hex_first_byte(flags)?;
    Some(format!("00-{trace_id}-{span_id}-{flags:02x}"))
}

/// A trace or span id as otel-go accepts it: `len` lower-case hex digits, not all zero.
fn is_w3c_id(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) && s.bytes().any(|b| b != b'0')
}

/// The first byte of Go's `hex.DecodeString(s)`, which takes either case but needs an even
/// length; `None` for an error or an empty result.
fn go_hex_first_byte(s: &str) -> Option<u8> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(s.get(..2)?, 16).ok()
}

/// The most list-members otel-go's `ParseTraceState` accepts.
const TRACESTATE_MAX_MEMBERS: usize = 32;

/// otel-go v1.44.0 `trace.ParseTraceState`, then `TraceState.String()`: the `tracestate` daprd
/// passes on, or `None` when otel rejects it (daprd then uses an empty tracestate).
///
/// Members are split on `,`; only truly empty ones are skipped (a member of just spaces is an
/// error). Each is cut at its first `=`. Only spaces and tabs before the key and after the value
/// are trimmed, so `a =1` is invalid while `a= 1` keeps the value ` 1`. Keys are `simple-key`
/// (`[a-z][a-z0-9_*/-]{0,255}`) or `tenant@system` (`[a-z0-9][a-z0-9_*/-]{0,240}` `@`
/// `[a-z][a-z0-9_*/-]{0,13}`). Values are 1 to 256 bytes of 0x20-0x7E except `,` and `=`, not
/// ending in a space. Duplicate keys, or more than 32 members, reject the whole header. Output is
/// `k=v,k2=v2` in input order. `""` (or only commas) parses, as in otel, to an empty tracestate:
/// `Some("")`.
pub(crate) fn normalise_tracestate(ts: &str) -> Option<String> {
    let mut members: Vec<(&str, &str)> = Vec::new();
    for member in ts.split(',') {
        if member.is_empty() {
            continue;
        }
        let (key, value) = member.split_once('=')?;
        let key = key.trim_start_matches([' ', '\t']);
        let value = value.trim_end_matches([' ', '\t']);
        if !tracestate_key_ok(key) || !tracestate_value_ok(value) || members.iter().any(|&(k, _)| k == key) {
            return None;
        }
        members.push((key, value));
        if members.len() > TRACESTATE_MAX_MEMBERS {
            return None;
        }
    }
    Some(members.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
}

/// otel's `checkKeyRemain`: `lcalpha / DIGIT / "_" / "-" / "*" / "/"`.
fn tracestate_key_rest_ok(rest: &[u8]) -> bool {
    rest.iter().all(|&b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
}

/// otel's `checkKey`: a simple key, or `tenant@system` cut at the first `@`.
fn tracestate_key_ok(key: &str) -> bool {
    // checkKeyPart: a lower-case letter, then at most `max_rest` more key characters.
    let part_ok = |part: &[u8], max_rest: usize| {
        part.split_first().is_some_and(|(first, rest)| first.is_ascii_lowercase() && rest.len() <= max_rest && tracestate_key_rest_ok(rest))
    };
    match key.split_once('@') {
        None => part_ok(key.as_bytes(), 255),
        Some((tenant, system)) => {
            // checkKeyTenant: a lower-case letter or digit, then at most 240 more.
            let tenant_ok = tenant.as_bytes().split_first().is_some_and(|(first, rest)| {
                (first.is_ascii_lowercase() || first.is_ascii_digit()) && rest.len() <= 240 && tracestate_key_rest_ok(rest)
            });
            tenant_ok && part_ok(system.as_bytes(), 13)
        }
    }
}

/// otel's `checkValue`: 1 to 256 bytes, `chr` then a final `nblk-chr`.
fn tracestate_value_ok(value: &str) -> bool {
    let printable = |c: u8, low: u8| (low..=0x7e).contains(&c) && c != b',' && c != b'=';
    let b = value.as_bytes();
    b.len() <= 256 && b.split_last().is_some_and(|(&last, init)| init.iter().all(|&c| printable(c, 0x20)) && printable(last, 0x21))
}

/// daprd's resiliency duration, as signed nanoseconds: a decimal integer (Go's
/// `strconv.ParseInt(s, 10, 64)`, sign allowed) is milliseconds, multiplied with Go's wrapping
/// `int64` arithmetic; anything else is [`parse_go_duration`], whose error text is returned.
///
/// Two daprd paths share this rule. dapr v1.18.3 `pkg/resiliency/resiliency.go` `parseDuration`
/// reads `policies.timeouts` (error `invalid duration "<name>", <value>: <this error>`). dapr/kit
/// `config.Decode` (`decodeString`, the `time.Duration` case, via `strconv.Atoi`) reads the retry
/// and circuit-breaker fields (`duration`, `maxInterval`, `interval`, `timeout`, …; error
/// `invalid duration "<value>"`, wrapped by mapstructure). Neither path rejects a negative value.
pub(crate) fn resiliency_duration_nanos(s: &str) -> Result<i64, String> {
    match go_parse_int(s) {
        Ok(ms) => Ok(ms.wrapping_mul(1_000_000)),
        Err(_) => parse_go_duration(s),
    }
}

/// [`resiliency_duration_nanos`] as a `Duration`, with a negative value as zero.
///
/// daprd accepts negative durations rather than failing. For a timeout, zero and negative mean
/// the same thing (`policy.go` applies a timeout only when `t > 0`). For a constant retry
/// interval, `-1ns` is the backoff library's `Stop` (no retries) and other negatives retry at
/// once; callers that need that difference should use [`resiliency_duration_nanos`].
pub(crate) fn resiliency_duration(s: &str) -> Result<Duration, String> {
    resiliency_duration_nanos(s).map(|n| Duration::from_nanos(n.max(0).unsigned_abs()))
}

/// dapr v1.18.3 `pkg/resiliency/retry.go` `parsePatterns`/`compilePattern`, for
/// `matching.httpStatusCodes` (`lo` 100, `hi` 599) and `matching.gRPCStatusCodes` (0, 16):
/// inclusive `(start, end)` ranges.
///
/// `Ok(None)` for `""`, which daprd stores as a nil list, and a nil list retries every code.
/// Otherwise the value is split on `,`, empty items are skipped and nothing is trimmed, so `","`
/// gives `Some(vec![])`, which matches no code. Each item is `N` or `A-B` parsed with
/// `strconv.Atoi` and then truncated to `int32` as Go's `int32(...)` does. The errors are daprd's:
/// `invalid pattern P, more than one '-' exists`,
/// `failed to parse start code X from pattern P to int, strconv.Atoi: parsing "X": invalid syntax`
/// (and the same for `end code`), `invalid pattern P, start code N is not valid` (likewise for
/// `end code`), and `invalid pattern P, start value should not bigger than end value`.
pub(crate) fn parse_status_code_ranges(s: &str, lo: u32, hi: u32) -> Result<Option<Vec<(u32, u32)>>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.split(',').filter(|p| !p.is_empty()).map(|p| compile_code_pattern(p, lo, hi)).collect::<Result<Vec<_>, _>>().map(Some)
}

/// daprd's `compilePattern` for one comma-separated item.
fn compile_code_pattern(pattern: &str, lo: u32, hi: u32) -> Result<(u32, u32), String> {
    let parts: Vec<&str> = pattern.split('-').collect();
    let (start_text, end_text) = match parts.as_slice() {
        [start] => (*start, None),
        [start, end] => (*start, Some(*end)),
        _ => return Err(format!("invalid pattern {pattern}, more than one '-' exists")),
    };
    let in_range = |code: i32| u32::try_from(code).is_ok_and(|code| (lo..=hi).contains(&code));
    let start_int = go_parse_int(start_text)
        .map_err(|e| format!("failed to parse start code {start_text} from pattern {pattern} to int, {}", go_atoi_error(start_text, e)))?;
    // Go's int32(startint) keeps the low 32 bits, and the error prints the truncated number.
    let start = start_int as i32;
    if !in_range(start) {
        return Err(format!("invalid pattern {pattern}, start code {start} is not valid"));
    }
    let end_int = match end_text {
        Some(end_text) => go_parse_int(end_text)
            .map_err(|e| format!("failed to parse end code {end_text} from pattern {pattern} to int, {}", go_atoi_error(end_text, e)))?,
        None => start_int,
    };
    let end = end_int as i32;
    if !in_range(end) {
        return Err(format!("invalid pattern {pattern}, end code {end} is not valid"));
    }
    if end < start {
        return Err(format!("invalid pattern {pattern}, start value should not bigger than end value"));
    }
    // Both are within lo..=hi, so non-negative.
    Ok((start.unsigned_abs(), end.unsigned_abs()))
}

/// daprd's `mustRetryStatusCode`: no list (`None`) matches every code; otherwise the code must
/// fall in one of the inclusive ranges.
pub(crate) fn code_matches(ranges: Option<&[(u32, u32)]>, code: u32) -> bool {
    ranges.is_none_or(|ranges| ranges.iter().any(|&(start, end)| (start..=end).contains(&code)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;

    #[test]
    fn durations_parse_as_go() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("+0", 0),
            ("-0", 0),
            ("5s", 5 * SEC),
            ("+5s", 5 * SEC),
            ("-5s", -5 * SEC),
            ("1h30m", 5400 * SEC),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("5.s", 5 * SEC),
            ("-1.5h", -5400 * SEC),
            ("0.3h", 1080 * SEC),
            ("1.000000001s", SEC + 1),
            ("0.1ns", 0),
            ("1.9ns", 1),
            ("100ms", 100_000_000),
            ("10us", 10_000),
            ("10\u{b5}s", 10_000),
            ("10\u{3bc}s", 10_000),
            ("3m5s7ms", 185_007_000_000),
            ("1h1h", 7200 * SEC),
            ("0.100000000000000000000h", 360 * SEC),
            // Go's own test for the first overflow check in leadingFraction.
            ("0.830103483285477580700h", (49 * 60 + 48) * SEC + 372_539_827),
            ("9223372036854775807ns", i64::MAX),
            ("9223372036854775.807us", i64::MAX),
            ("9223372036s854ms775us807ns", i64::MAX),
            ("2562047h47m16.854775807s", i64::MAX),
            ("-9223372036854775808ns", i64::MIN),
            ("-9223372036854775.808us", i64::MIN),
            ("-2562047h47m16.854775808s", i64::MIN),
            // Go's uint64 accumulator wraps here.
            ("9223372036854775808ns9223372036854775808ns", 0),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go_duration(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn duration_errors_are_gos() {
        let cases: &[(&str, &str)] = &[
            ("", r#"time: invalid duration """#),
            ("-", r#"time: invalid duration "-""#),
            ("s", r#"time: invalid duration "s""#),
            (".", r#"time: invalid duration ".""#),
            ("-.", r#"time: invalid duration "-.""#),
            (".s", r#"time: invalid duration ".s""#),
            ("+.s", r#"time: invalid duration "+.s""#),
            ("1", r#"time: missing unit in duration "1""#),
            ("3", r#"time: missing unit in duration "3""#),
            ("00", r#"time: missing unit in duration "00""#),
            ("5.", r#"time: missing unit in duration "5.""#),
            ("1.2.3s", r#"time: missing unit in duration "1.2.3s""#),
            ("5x", r#"time: unknown unit "x" in duration "5x""#),
            ("1d", r#"time: unknown unit "d" in duration "1d""#),
            ("1e3s", r#"time: unknown unit "e" in duration "1e3s""#),
            ("5 s", r#"time: unknown unit " s" in duration "5 s""#),
            ("1h ", r#"time: unknown unit "h " in duration "1h ""#),
            ("1h-5m", r#"time: unknown unit "h-" in duration "1h-5m""#),
            ("5\"", r#"time: unknown unit "\"" in duration "5\"""#),
            ("1\u{e9}", r#"time: unknown unit "\xc3\xa9" in duration "1\xc3\xa9""#),
            ("\u{fffd}", r#"time: invalid duration "\xef\xbf\xbd""#),
            (" 5s", r#"time: invalid duration " 5s""#),
            ("9223372036854775808ns", r#"time: invalid duration "9223372036854775808ns""#),
            ("9223372036854775810ns", r#"time: invalid duration "9223372036854775810ns""#),
            ("-9223372036854775809ns", r#"time: invalid duration "-9223372036854775809ns""#),
            ("9223372036854776us", r#"time: invalid duration "9223372036854776us""#),
            ("3000000h", r#"time: invalid duration "3000000h""#),
            ("9223372036854775.808us", r#"time: invalid duration "9223372036854775.808us""#),
            ("9223372036854ms775us808ns", r#"time: invalid duration "9223372036854ms775us808ns""#),
            ("9223372036854775808ns1ns", r#"time: invalid duration "9223372036854775808ns1ns""#),
        ];
        for &(input, want) in cases {
            assert_eq!(parse_go_duration(input), Err(want.to_string()), "{input:?}");
        }
    }

    #[test]
    fn ints_parse_as_strconv() {
        let cases: &[(&str, Result<i64, GoIntError>)] = &[
            ("0", Ok(0)),
            ("+5", Ok(5)),
            ("-05", Ok(-5)),
            ("9223372036854775807", Ok(i64::MAX)),
            ("-9223372036854775808", Ok(i64::MIN)),
            ("9223372036854775808", Err(GoIntError::Range)),
            ("-9223372036854775809", Err(GoIntError::Range)),
            ("99999999999999999999", Err(GoIntError::Range)),
            // The overflow comes before the bad digit.
            ("99999999999999999999x", Err(GoIntError::Range)),
            ("", Err(GoIntError::Syntax)),
            ("+", Err(GoIntError::Syntax)),
            ("-", Err(GoIntError::Syntax)),
            (" 5", Err(GoIntError::Syntax)),
            ("5 ", Err(GoIntError::Syntax)),
            ("1_000", Err(GoIntError::Syntax)),
            ("0x10", Err(GoIntError::Syntax)),
            ("--5", Err(GoIntError::Syntax)),
        ];
        for &(input, want) in cases {
            assert_eq!(go_parse_int(input), want, "{input:?}");
        }
        assert_eq!(go_atoi_error(" 429", GoIntError::Syntax), r#"strconv.Atoi: parsing " 429": invalid syntax"#);
    }

    #[test]
    fn quoting_matches_go() {
        assert_eq!(go_quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(go_quote("\t\n\u{7}\u{0}\u{7f}"), r#""\t\n\a\x00\x7f""#);
        assert_eq!(go_quote("5\u{e9}"), "\"5\u{e9}\"");
        assert_eq!(go_quote("\u{a0}\u{200b}\u{feff}"), r#""\u00a0\u200b\ufeff""#);
        assert_eq!(go_quote("\u{10ffff}"), r#""\U0010ffff""#);
        assert_eq!(go_time_quote("a\u{7f}\"\t"), "\"a\u{7f}\\\"\\x09\"");
    }

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|&(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn metadata_lookup_is_case_insensitive_with_key_priority() {
        let p = props(&[("TTLInSeconds", "60"), ("Ttl", "5s"), ("other", "")]);
        assert_eq!(get_metadata_property(&p, &["ttl", "ttlInSeconds"]), Some("5s"));
        assert_eq!(get_metadata_property(&p, &["ttlinseconds", "ttl"]), Some("60"));
        assert_eq!(get_metadata_property(&p, &["OTHER"]), Some(""));
        assert_eq!(get_metadata_property(&p, &["missing"]), None);
        assert_eq!(get_metadata_property(&p, &[]), None);
        // Go's simple mapping lowers U+0130 to a plain `i`.
        let p = props(&[("\u{130}D", "x")]);
        assert_eq!(get_metadata_property(&p, &["id"]), Some("x"));
    }

    #[test]
    fn ttl_is_read_as_contrib_does() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<Option<i64>, &'a str>);
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (&[("ttl", "")], Ok(None)),
            // A present but empty `ttl` hides `ttlInSeconds`.
            (&[("ttl", ""), ("ttlInSeconds", "5")], Ok(None)),
            (&[("ttl", "90s")], Ok(Some(90 * SEC))),
            (&[("TTLINSECONDS", "60")], Ok(Some(60 * SEC))),
            (&[("ttl", "10"), ("ttlInSeconds", "60")], Ok(Some(10 * SEC))),
            (&[("ttl", "1h")], Ok(Some(3600 * SEC))),
            (&[("ttl", "+05")], Ok(Some(5 * SEC))),
            (&[("ttl", "0")], Ok(Some(0))),
            (&[("ttl", "0s")], Ok(Some(0))),
            (&[("ttl", "-5s")], Ok(Some(0))),
            (&[("ttl", "9223372036")], Ok(Some(9_223_372_036 * SEC))),
            // The product wraps negative: clamped to the maximum.
            (&[("ttl", "9223372037")], Ok(Some(i64::MAX))),
            // The product wraps to a positive value, which Go keeps.
            (&[("ttl", "18446744074")], Ok(Some(290_448_384))),
            (&[("ttl", "abc")], Err("ttl value must be a valid integer: actual is 'abc'")),
            (&[("ttl", "1.5")], Err("ttl value must be a valid integer: actual is '1.5'")),
            (&[("ttl", " 5")], Err("ttl value must be a valid integer: actual is ' 5'")),
            (&[("ttl", "99999999999999999999")], Err("ttl value must be a valid integer: actual is '99999999999999999999'")),
            (&[("ttlInSeconds", "-5")], Err("ttl value must be higher than zero: actual is '-5'")),
            (&[("ttl", "-05")], Err("ttl value must be higher than zero: actual is '-5'")),
            (&[("ttl", "-0")], Ok(Some(0))),
        ];
        for (pairs, want) in cases {
            let want = want.map_err(str::to_string);
            assert_eq!(try_get_ttl(&props(pairs)), want, "{pairs:?}");
        }
    }

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SID: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_is_normalised_as_daprd() {
        let valid = format!("00-{TID}-{SID}-01");
        let cases = [
            (valid.clone(), Some(valid.clone())),
            (format!("00-{TID}-{SID}-02"), Some(format!("00-{TID}-{SID}-02"))),
            (format!("00-{TID}-{SID}-00"), Some(format!("00-{TID}-{SID}-00"))),
            // Versions above 00 may carry more sections; the output is always version 00.
            (format!("01-{TID}-{SID}-01-xyz"), Some(valid.clone())),
            (format!("fe-{TID}-{SID}-01"), Some(valid.clone())),
            (format!("0A-{TID}-{SID}-01"), Some(valid.clone())),
            // Flags: any even-length hex, either case, first byte only.
            (format!("00-{TID}-{SID}-AB"), Some(format!("00-{TID}-{SID}-ab"))),
            (format!("00-{TID}-{SID}-0102"), Some(valid.clone())),
            (format!("00-{TID}-{SID}-1"), None),
            (format!("00-{TID}-{SID}-"), None),
            (format!("00-{TID}-{SID}-zz"), None),
            (format!("00-{TID}-{SID}-01-xyz"), None),
            (format!("ff-{TID}-{SID}-01"), None),
            (format!("FF-{TID}-{SID}-01"), None),
            (format!("0-{TID}-{SID}-01"), None),
            (format!("000-{TID}-{SID}-01"), None),
            (format!("0g-{TID}-{SID}-01"), None),
            (format!("00-{}-{SID}-01", TID.to_uppercase()), None),
            (format!("00-{TID}-{}-01", SID.to_uppercase()), None),
            (format!("00-{}-{SID}-01", "0".repeat(32)), None),
            (format!("00-{TID}-{}-01", "0".repeat(16)), None),
            (format!("00-{}-{SID}-01", &TID[1..]), None),
            (format!("00-{TID}-{}-01", &SID[1..]), None),
            (format!("00-{TID}-{SID}"), None),
            (String::new(), None),
            (" ".to_string(), None),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_traceparent(&input), want, "{input:?}");
        }
    }

    #[test]
    fn tracestate_is_normalised_as_otel() {
        let long_key = format!("a{}", "b".repeat(255));
        let too_long_key = format!("a{}", "b".repeat(256));
        let value_256 = "v".repeat(256);
        let many = |n: usize| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
        let cases = [
            (String::new(), Some(String::new())),
            (",,".to_string(), Some(String::new())),
            ("congo=t61rcWkgMzE".to_string(), Some("congo=t61rcWkgMzE".to_string())),
            ("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE".to_string(), Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_string())),
            (" a=1 ,\tb=2\t,".to_string(), Some("a=1,b=2".to_string())),
            ("a= 1".to_string(), Some("a= 1".to_string())),
            ("a=1 2".to_string(), Some("a=1 2".to_string())),
            ("a =1".to_string(), None),
            ("a=1, ,b=2".to_string(), None),
            ("a".to_string(), None),
            ("a=".to_string(), None),
            ("=1".to_string(), None),
            ("a=b=c".to_string(), None),
            ("A=1".to_string(), None),
            ("1a=1".to_string(), None),
            ("a.b=1".to_string(), None),
            ("a_-*/9=1".to_string(), Some("a_-*/9=1".to_string())),
            ("1t@sys=1".to_string(), Some("1t@sys=1".to_string())),
            ("t@1s=1".to_string(), None),
            ("@s=1".to_string(), None),
            ("t@=1".to_string(), None),
            ("a@b@c=1".to_string(), None),
            (format!("t@a{}=1", "b".repeat(13)), Some(format!("t@a{}=1", "b".repeat(13)))),
            (format!("t@a{}=1", "b".repeat(14)), None),
            (format!("a{}@s=1", "b".repeat(240)), Some(format!("a{}@s=1", "b".repeat(240)))),
            (format!("a{}@s=1", "b".repeat(241)), None),
            (format!("{long_key}=1"), Some(format!("{long_key}=1"))),
            (format!("{too_long_key}=1"), None),
            (format!("a={value_256}"), Some(format!("a={value_256}"))),
            (format!("a={value_256}v"), None),
            ("a=\u{e9}".to_string(), None),
            ("a=x\u{7f}".to_string(), None),
            ("a=1,a=2".to_string(), None),
            ("a=1,b=2,a=1".to_string(), None),
            (many(32), Some(many(32))),
            (many(33), None),
        ];
        for (input, want) in cases {
            assert_eq!(normalise_tracestate(&input), want, "{input:?}");
        }
    }

    #[test]
    fn resiliency_durations_decode_as_daprd() {
        const MS: i64 = 1_000_000;
        let cases: &[(&str, Result<i64, &str>)] = &[
            ("5", Ok(5 * MS)),
            ("1500", Ok(1500 * MS)),
            ("+5", Ok(5 * MS)),
            ("0", Ok(0)),
            ("-5", Ok(-5 * MS)),
            ("5s", Ok(5 * SEC)),
            ("1m30s", Ok(90 * SEC)),
            ("-1ns", Ok(-1)),
            // Go's int64 multiplication wraps.
            ("9223372036854775807", Ok(i64::MAX.wrapping_mul(MS))),
            ("5.5", Err(r#"time: missing unit in duration "5.5""#)),
            ("abc", Err(r#"time: invalid duration "abc""#)),
            ("", Err(r#"time: invalid duration """#)),
        ];
        for &(input, want) in cases {
            assert_eq!(resiliency_duration_nanos(input), want.map_err(str::to_string), "{input:?}");
        }
        assert_eq!(resiliency_duration("1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(resiliency_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(resiliency_duration("-5s").unwrap(), Duration::ZERO);
        assert!(resiliency_duration("x").is_err());
    }

    #[test]
    fn status_code_patterns_parse_as_daprd() {
        let http = |s: &str| parse_status_code_ranges(s, 100, 599);
        let grpc = |s: &str| parse_status_code_ranges(s, 0, 16);
        assert_eq!(http(""), Ok(None));
        assert_eq!(http(","), Ok(Some(vec![])));
        assert_eq!(http("500-502,429"), Ok(Some(vec![(500, 502), (429, 429)])));
        assert_eq!(http(",500,,"), Ok(Some(vec![(500, 500)])));
        assert_eq!(http("+500"), Ok(Some(vec![(500, 500)])));
        assert_eq!(http("100-599"), Ok(Some(vec![(100, 599)])));
        // int32(4294967396) is 100.
        assert_eq!(http("4294967396"), Ok(Some(vec![(100, 100)])));
        assert_eq!(grpc("0-16"), Ok(Some(vec![(0, 16)])));
        assert_eq!(grpc("1-2,4"), Ok(Some(vec![(1, 2), (4, 4)])));

        let errors: &[(&str, bool, &str)] = &[
            ("500, 429", true, r#"failed to parse start code  429 from pattern  429 to int, strconv.Atoi: parsing " 429": invalid syntax"#),
            ("600", true, "invalid pattern 600, start code 600 is not valid"),
            ("99", true, "invalid pattern 99, start code 99 is not valid"),
            ("500-600", true, "invalid pattern 500-600, end code 600 is not valid"),
            ("502-500", true, "invalid pattern 502-500, start value should not bigger than end value"),
            ("1-2-3", false, "invalid pattern 1-2-3, more than one '-' exists"),
            ("17", false, "invalid pattern 17, start code 17 is not valid"),
            ("-5", false, r#"failed to parse start code  from pattern -5 to int, strconv.Atoi: parsing "": invalid syntax"#),
            ("500-", true, r#"failed to parse end code  from pattern 500- to int, strconv.Atoi: parsing "": invalid syntax"#),
            // The start is checked before the end is parsed.
            ("600-x", true, "invalid pattern 600-x, start code 600 is not valid"),
            (
                "99999999999999999999",
                true,
                concat!(
                    "failed to parse start code 99999999999999999999 from pattern 99999999999999999999 to int, ",
                    r#"strconv.Atoi: parsing "99999999999999999999": value out of range"#,
                ),
            ),
            // int32(4294967295) is -1.
            ("4294967295", false, "invalid pattern 4294967295, start code -1 is not valid"),
        ];
        for &(input, is_http, want) in errors {
            let got = if is_http { http(input) } else { grpc(input) };
            assert_eq!(got, Err(want.to_string()), "{input:?}");
        }
    }

    #[test]
    fn codes_match_as_daprd() {
        assert!(code_matches(None, 503));
        assert!(!code_matches(Some(&[][..]), 503));
        let ranges = [(500, 502), (429, 429)];
        assert!(code_matches(Some(ranges.as_slice()), 500));
        assert!(code_matches(Some(ranges.as_slice()), 502));
        assert!(code_matches(Some(ranges.as_slice()), 429));
        assert!(!code_matches(Some(ranges.as_slice()), 503));
        assert!(!code_matches(Some(ranges.as_slice()), 428));
    }
}
