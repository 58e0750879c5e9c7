//! The CloudEvent envelope daprd wraps a published body in, and its serialisation
//! byte-compatible with Go's `json.Marshal` of a map: keys sorted at every level, no
//! whitespace, `<`, `>`, `&`, U+2028 and U+2029 escaped. Numbers: envelope data is
//! decoded with `UseNumber` by daprd, so its numbers keep their text; state values are
//! decoded into float64 and printed as Go prints a float64.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value;

/// The content type of a body that is already a structured CloudEvent.
pub const CLOUDEVENT_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The CloudEvent `type` given to an event whose publisher sets none.
pub const DEFAULT_TYPE: &str = "com.dapr.event.sent";

/// What the publisher supplied, beyond the body.
#[derive(Debug, Clone)]
pub struct PublishInput<'a> {
    /// The publishing app's id: the event's `source`.
    pub app_id: &'a str,
    /// The pub/sub component published to: the event's `pubsubname`.
    pub pubsub: &'a str,
    /// The topic published to: the event's `topic`.
    pub topic: &'a str,
    /// The body's content type, if the request gave one.
    pub content_type: Option<&'a str>,
    /// The request's W3C `traceparent`, empty when absent.
    pub traceparent: &'a str,
    /// The request's W3C `tracestate`, empty when absent.
    pub tracestate: &'a str,
    /// `metadata.*` of the request.
    pub metadata: &'a BTreeMap<String, String>,
}

/// contrib's `isContentType`: the lower-cased value equals `want`, or its part before the
/// first `;` does (nothing trimmed).
fn is_content_type(ct: &str, want: &str) -> bool {
    let ct = ct.to_lowercase();
    ct == want || ct.split(';').next() == Some(want)
}

/// contrib's `IsJSONContentType`: `application/json` only (`+json` types are not JSON).
pub fn is_json_content_type(ct: &str) -> bool {
    is_content_type(ct, "application/json")
}

/// contrib's `IsCloudEventContentType`.
pub fn is_cloudevent_content_type(ct: &str) -> bool {
    is_content_type(ct, CLOUDEVENT_CONTENT_TYPE)
}

/// contrib's `IsBinaryContentType`.
pub fn is_binary_content_type(ct: &str) -> bool {
    is_content_type(ct, "application/octet-stream")
}

/// contrib's `IsStringContentType`: `text/*` or `application/xml`.
pub fn is_string_content_type(ct: &str) -> bool {
    ct.to_lowercase().starts_with("text/") || is_content_type(ct, "application/xml")
}

/// The first JSON value of `body`, as Go's `json.Decoder` reads it (what follows is
/// ignored).
pub(crate) fn first_json_value(body: &[u8]) -> Option<Value> {
    serde_json::Deserializer::from_slice(body).into_iter::<Value>().next().and_then(Result::ok)
}

/// A `cloudevent.<field>` override, looked up as mapstructure does: the exact key first,
/// then any case. A present but empty value still overrides.
fn ce_override<'a>(md: &'a BTreeMap<String, String>, field: &str) -> Option<&'a str> {
    let key = format!("cloudevent.{field}");
    md.get(&key).or_else(|| md.iter().find(|(k, _)| k.eq_ignore_ascii_case(&key)).map(|(_, v)| v)).map(String::as_str)
}

/// Builds the envelope for `body` as daprd's `NewCloudEvent` does. A body sent as
/// `application/cloudevents+json` is kept (contrib's `FromCloudEvent`: defaults and trace
/// filled only where missing, no `cloudevent.*` overrides); invalid JSON there is an
/// error. Any other body is wrapped, the overrides applied. The TTL (`ttl` or
/// `ttlInSeconds`) sets `expiration`; a TTL that does not parse is ignored.
pub fn envelope(input: &PublishInput, body: &[u8], now: chrono::DateTime<chrono::Utc>) -> Result<BTreeMap<String, Value>, String> {
    let ct = input.content_type.filter(|c| !c.is_empty());
    let time = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut ce: BTreeMap<String, Value> = if ct.is_some_and(is_cloudevent_content_type) {
        let Some(Value::Object(m)) = first_json_value(body) else {
            return Err("cannot create cloudevent: the body is not a JSON object".into());
        };
        let mut m: BTreeMap<String, Value> = m.into_iter().collect();
        m.entry("time".into()).or_insert_with(|| Value::String(time.clone()));
        if !m.contains_key("traceid") {
            m.insert("traceid".into(), Value::String(input.traceparent.into()));
            m.insert("traceparent".into(), Value::String(input.traceparent.into()));
        }
        m.entry("tracestate".into()).or_insert_with(|| Value::String(input.tracestate.into()));
        for (k, default) in [("source", "Dapr"), ("type", DEFAULT_TYPE), ("specversion", "1.0")] {
            if m.get(k).is_none_or(Value::is_null) {
                m.insert(k.into(), Value::String(default.into()));
            }
        }
        m
    } else {
        let md = input.metadata;
        let ct = ct.unwrap_or("text/plain");
        let or_default = |v: Option<&str>, default: &str| v.filter(|v| !v.is_empty()).unwrap_or(default).to_string();
        let mut m = BTreeMap::new();
        let id = or_default(ce_override(md, "id"), "");
        m.insert("id".into(), Value::String(if id.is_empty() { uuid::Uuid::new_v4().to_string() } else { id }));
        m.insert("specversion".into(), Value::String("1.0".into()));
        let source = match ce_override(md, "source") {
            Some(v) => or_default(Some(v), "Dapr"),
            None => input.app_id.to_string(),
        };
        m.insert("source".into(), Value::String(source));
        m.insert("type".into(), Value::String(or_default(ce_override(md, "type"), DEFAULT_TYPE)));
        m.insert("datacontenttype".into(), Value::String(ct.into()));
        // One trace value fills both fields: the override's traceparent, else its traceid,
        // else the caller's.
        let mut trace = ce_override(md, "traceid").unwrap_or(input.traceparent).to_string();
        if let Some(tp) = ce_override(md, "traceparent").filter(|v| !v.is_empty()) {
            trace = tp.to_string();
        }
        m.insert("traceid".into(), Value::String(trace.clone()));
        m.insert("traceparent".into(), Value::String(trace));
        m.insert("tracestate".into(), Value::String(ce_override(md, "tracestate").unwrap_or(input.tracestate).into()));
        if let Some(subject) = ce_override(md, "subject").filter(|v| !v.is_empty()) {
            m.insert("subject".into(), Value::String(subject.into()));
        }
        m.insert("time".into(), Value::String(time));
        if is_binary_content_type(ct) || is_content_type(ct, "application/cloudevents+protobuf") {
            m.insert("data_base64".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(body)));
        } else if is_json_content_type(ct) {
            let data = first_json_value(body).unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned()));
            m.insert("data".into(), data);
        } else {
            m.insert("data".into(), Value::String(String::from_utf8_lossy(body).into_owned()));
        }
        m
    };
    ce.insert("topic".into(), Value::String(input.topic.into()));
    ce.insert("pubsubname".into(), Value::String(input.pubsub.into()));
    // ApplyMetadata: TryGetTTL's error is discarded; the brokers here have no native TTL.
    if let Ok(Some(nanos)) = crate::go_compat::try_get_ttl(input.metadata)
        && let Some(exp) = now.checked_add_signed(chrono::Duration::nanoseconds(nanos))
    {
        ce.insert("expiration".into(), Value::String(exp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
    }
    Ok(ce)
}

pub(crate) use spindapr_dapr_components::parse_go_bool;

/// Whether an envelope's `expiration` has passed.
pub fn is_expired(ce: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    ce.get("expiration").and_then(Value::as_str).and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok()).is_some_and(|e| e < now)
}

/// Serialises like Go's `json.Marshal` of `map[string]interface{}`.
pub fn to_go_json(map: &BTreeMap<String, Value>) -> Vec<u8> {
    let mut out = String::new();
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(&mut out, k);
        out.push(':');
        write_value(&mut out, v, Numbers::Verbatim);
    }
    out.push('}');
    out.into_bytes()
}

/// How numbers are printed.
#[derive(Clone, Copy)]
enum Numbers {
    /// As decoded with Go's `UseNumber`: the text as written. Canonical spellings round-trip
    /// exactly; unusual ones (`1.50`, `1E5`) come out in serde_json's canonical form.
    Verbatim,
    /// As Go prints a float64 decoded by `json.Unmarshal` into `interface{}`.
    Float64,
}

/// Serialises a value as daprd stores it: Go's `json.Marshal` of `json.Unmarshal`'s
/// result (numbers through float64).
pub fn value_to_go_json(v: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_value(&mut out, v, Numbers::Float64);
    out.into_bytes()
}

/// Go's `fmt.Sprintf("%v", v)` of a value `json.Unmarshal` produced: how daprd's
/// outbox renders a state value whose `contentType` is not JSON.
pub fn go_fmt_v(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float_g(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_fmt_v).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!("map[{}]", keys.iter().map(|k| format!("{k}:{}", go_fmt_v(&m[*k]))).collect::<Vec<_>>().join(" "))
        }
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
fn go_float_g(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        return format!("{f}");
    }
    let s = format!("{f:e}");
    let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{mant}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

fn write_value(out: &mut String, v: &Value, numbers: Numbers) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match numbers {
            Numbers::Verbatim => out.push_str(&n.to_string()),
            Numbers::Float64 => out.push_str(&go_number(n)),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, x, numbers);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, k);
                out.push(':');
                write_value(out, &m[k], numbers);
            }
            out.push('}');
        }
    }
}

/// Go decodes JSON numbers into float64 and prints them with 'f' formatting for
/// exponents in [-6, 21), 'e' formatting (`1e+21`, `1e-07`) otherwise.
fn go_number(n: &serde_json::Number) -> String {
    let f = n.as_f64().unwrap_or(0.0);
    if f == 0.0 {
        return if f.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let abs = f.abs();
    if (1e-6..1e21).contains(&abs) {
        let s = format!("{f}");
        return s;
    }
    // Shortest round-trip digits, then Go's exponent form.
    let s = format!("{f:e}");
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mant}e{sign}{:02}", exp.abs())
}

pub(crate) fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Copy the runs between characters Go escapes in one go.
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '<' => "\\u003c",
            '>' => "\\u003e",
            '&' => "\\u0026",
            '\u{2028}' => "\\u2028",
            '\u{2029}' => "\\u2029",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if esc.is_empty() {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push_str(esc);
        }
        run = i + c.len_utf8();
    }
    out.push_str(&s[run..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_go_escapes_them() {
        let mut out = String::new();
        write_string(&mut out, "a\"b\\c\n\u{1}é<x>&\u{2028}\u{7f}z");
        // DEL is not escaped by Go's encoder (only controls below 0x20 are).
        assert_eq!(out, concat!(r#""a\"b\\c\n\u0001é\u003cx\u003e\u0026\u2028"#, "\u{7f}z\""));
        let mut plain = String::new();
        write_string(&mut plain, "");
        assert_eq!(plain, r#""""#);
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-26T10:20:30.123Z").unwrap().with_timezone(&chrono::Utc)
    }

    fn input<'a>(ct: Option<&'a str>, md: &'a BTreeMap<String, String>) -> PublishInput<'a> {
        PublishInput {
            app_id: "todo",
            pubsub: "pubsub",
            topic: "todo-events",
            content_type: ct,
            traceparent: "",
            tracestate: "",
            metadata: md,
        }
    }

    #[test]
    fn json_body_is_embedded_and_serialised_like_go() {
        let md = BTreeMap::new();
        let ce = envelope(&input(Some("application/json"), &md), br#"{"z":1,"a":"<b>&","n":1.5,"neg":-3,"q":0.25}"#, now()).unwrap();
        let bytes = String::from_utf8(to_go_json(&ce)).unwrap();
        let id = ce["id"].as_str().unwrap();
        assert_eq!(
            bytes,
            format!(
                r#"{{"data":{{"a":"\u003cb\u003e\u0026","n":1.5,"neg":-3,"q":0.25,"z":1}},"datacontenttype":"application/json","id":"{id}","pubsubname":"pubsub","source":"todo","specversion":"1.0","time":"2026-11-26T10:20:30Z","topic":"todo-events","traceid":"","traceparent":"","tracestate":"","type":"com.dapr.event.sent"}}"#
            )
        );
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
    }

    #[test]
    fn state_values_print_numbers_as_go_float64() {
        let v: Value = serde_json::from_str(r#"{"b":1e21,"a":[1.0,0.0000001,2.5],"s":"<"}"#).unwrap();
        assert_eq!(String::from_utf8(value_to_go_json(&v)).unwrap(), r#"{"a":[1,1e-07,2.5],"b":1e+21,"s":"\u003c"}"#);
        assert_eq!(go_fmt_v(&v), "map[a:[1 1e-07 2.5] b:1e+21 s:<]");
        assert_eq!(go_fmt_v(&Value::String("plain".into())), "plain");
    }

    #[test]
    fn content_types_pick_the_data_field() {
        let md = BTreeMap::new();
        let ce = envelope(&input(None, &md), b"hello", now()).unwrap();
        assert_eq!((ce["datacontenttype"].as_str(), ce["data"].as_str()), (Some("text/plain"), Some("hello")));
        let ce = envelope(&input(Some("application/octet-stream"), &md), &[0, 1, 2], now()).unwrap();
        assert_eq!(ce["data_base64"], "AAEC");
        assert!(!ce.contains_key("data"));
        let ce = envelope(&input(Some("application/json"), &md), b"{not json", now()).unwrap();
        assert_eq!(ce["data"], "{not json");
        // contrib's IsJSONContentType: `+json` types are not JSON, the part before `;`
        // counts, nothing is trimmed; trailing bytes after the JSON value are ignored.
        let ce = envelope(&input(Some("application/vnd.x+json"), &md), b"[1]", now()).unwrap();
        assert_eq!(ce["data"], "[1]");
        let ce = envelope(&input(Some("Application/JSON; charset=utf-8"), &md), br#"{"a":1} trailing"#, now()).unwrap();
        assert_eq!(ce["data"], serde_json::json!({"a": 1}));
        let ce = envelope(&input(Some("application/json ;x"), &md), b"[1]", now()).unwrap();
        assert_eq!(ce["data"], "[1]");
        let ce = envelope(&input(Some("application/cloudevents+protobuf"), &md), &[0, 1], now()).unwrap();
        assert_eq!(ce["data_base64"], "AAE=");
    }

    #[test]
    fn cloudevent_bodies_are_kept_as_from_cloud_event() {
        // FromCloudEvent: no id added, no overrides, null defaults, tracestate on its own.
        let md: BTreeMap<String, String> = [("cloudevent.id".to_string(), "z".to_string())].into();
        let mut i = input(Some("application/cloudevents+json"), &md);
        i.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        i.tracestate = "a=b";
        let ce = envelope(&i, br#"{"source":null,"traceid":"x"}"#, now()).unwrap();
        assert!(!ce.contains_key("id"));
        assert_eq!((ce["source"].as_str(), ce["traceid"].as_str(), ce["tracestate"].as_str()), (Some("Dapr"), Some("x"), Some("a=b")));
        assert!(!ce.contains_key("traceparent"), "the caller's trace fills traceparent only with traceid");
        let md = BTreeMap::new();
        let ce = envelope(
            &input(Some("application/cloudevents+json"), &md),
            br#"{"id":"mine","type":"custom","topic":"other","data":{"x":1}}"#,
            now(),
        )
        .unwrap();
        assert_eq!(ce["id"], "mine");
        assert_eq!(ce["type"], "custom");
        assert_eq!(ce["topic"], "todo-events");
        assert_eq!(ce["pubsubname"], "pubsub");
        assert_eq!(ce["source"], "Dapr");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["time"], "2026-11-26T10:20:30Z");
        assert!(envelope(&input(Some("application/cloudevents+json"), &md), b"nope", now()).is_err());
    }

    #[test]
    fn metadata_overrides_and_ttl() {
        let md =
            |pairs: &[(&str, &str)]| -> BTreeMap<String, String> { pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
        let ce = envelope(
            &input(Some("text/plain"), &md(&[("cloudevent.id", "fixed"), ("cloudevent.subject", "s"), ("ttlInSeconds", "60")])),
            b"x",
            now(),
        )
        .unwrap();
        assert_eq!(ce["id"], "fixed");
        assert_eq!(ce["subject"], "s");
        assert_eq!(ce["expiration"], "2026-11-26T10:21:30Z");
        let v = serde_json::to_value(&ce).unwrap();
        assert!(!is_expired(&v, now()));
        assert!(is_expired(&v, now() + chrono::Duration::seconds(61)));
        // Empty overrides still override, then the defaults apply; keys in any case;
        // traceparent wins over traceid and fills both.
        let ce = envelope(
            &input(Some("text/plain"), &md(&[("cloudevent.source", ""), ("cloudevent.TraceId", "U"), ("cloudevent.traceparent", "T")])),
            b"x",
            now(),
        )
        .unwrap();
        assert_eq!((ce["source"].as_str(), ce["traceid"].as_str(), ce["traceparent"].as_str()), (Some("Dapr"), Some("T"), Some("T")));
        let ce = envelope(&input(Some("text/plain"), &md(&[("cloudevent.TraceId", "U")])), b"x", now()).unwrap();
        assert_eq!((ce["traceid"].as_str(), ce["traceparent"].as_str()), (Some("U"), Some("U")));
        // TryGetTTL: `ttl` first, any case, Go durations; a bad value is ignored; 0 is now.
        for (pairs, want) in [
            (&[("ttl", "90s"), ("ttlInSeconds", "5")][..], Some("2026-11-26T10:22:00Z")),
            (&[("TTLINSECONDS", "60")][..], Some("2026-11-26T10:21:30Z")),
            (&[("ttlInSeconds", "abc")][..], None),
            (&[("ttlInSeconds", "-5")][..], None),
            (&[("ttlInSeconds", "0")][..], Some("2026-11-26T10:20:30Z")),
            (&[("ttl", "-5s")][..], Some("2026-11-26T10:20:30Z")),
        ] {
            let ce = envelope(&input(Some("text/plain"), &md(pairs)), b"x", now()).unwrap();
            assert_eq!(ce.get("expiration").and_then(Value::as_str), want, "{pairs:?}");
        }
    }

    #[test]
    fn huge_ttls_do_not_panic() {
        for ttl in ["99999999999999", "9223372036854775807", "-9223372036854775808", "9223372037"] {
            let md: BTreeMap<String, String> = [("ttlInSeconds".to_string(), ttl.to_string())].into_iter().collect();
            let ce = envelope(&input(Some("text/plain"), &md), b"x", now()).unwrap();
            if let Some(e) = ce.get("expiration").and_then(Value::as_str) {
                assert!(e > "2026", "{ttl}: {e}");
            }
        }
    }
}
