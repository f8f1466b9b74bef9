//! Typed payloads: JSON values on the command line, MessagePack on the wire.
//!
//! JSON → MessagePack: null, booleans, integers (signed or unsigned 64-bit), floats
//! (64-bit), strings, arrays and maps (string keys) map one to one.
//!
//! MessagePack → JSON has more to say, since MessagePack is richer:
//!
//! | MessagePack | JSON |
//! |---|---|
//! | binary, or a string that is not UTF-8 | `{"$binary": "<base64>"}` |
//! | extension type `t` | `{"$ext": t, "$data": "<base64>"}` |
//! | map key that is not a string | the key's JSON text (`1`, `[1,2]`) |
//! | NaN, infinities | the strings `"NaN"`, `"inf"`, `"-inf"` |
//!
//! (The reserved marker `0xc1` reads as null: that is rmpv's choice, and harmless.)
//!
//! A frame must hold exactly one MessagePack value: trailing bytes are an error, and so
//! is nesting deeper than [`MAX_DEPTH`] (no recursion on a peer's say-so).

use anyhow::{Context as _, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rmpv::Value as Mp;
use serde_json::Value as Json;

/// Deepest nesting accepted in either direction (serde_json's own limit is 128).
pub const MAX_DEPTH: usize = 128;

/// Parses JSON text and encodes it as MessagePack.
pub fn json_text_to_msgpack(text: &str) -> Result<Vec<u8>> {
    let json: Json = serde_json::from_str(text)
        .with_context(|| format!("{} is not valid JSON", abbreviate(text)))?;
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    rmpv::encode::write_value(&mut out, &json_to_msgpack(&json)).context("encoding MessagePack")?;
    Ok(out)
}

fn abbreviate(text: &str) -> String {
    let mut s: String = text.chars().take(40).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Converts a JSON value to a MessagePack value.
pub fn json_to_msgpack(v: &Json) -> Mp {
    match v {
        Json::Null => Mp::Nil,
        Json::Bool(b) => Mp::Boolean(*b),
        Json::Number(n) => {
            if let Some(u) = n.as_u64() {
                Mp::from(u)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                // serde_json numbers are u64, i64 or finite f64.
                Mp::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Mp::from(s.as_str()),
        Json::Array(a) => Mp::Array(a.iter().map(json_to_msgpack).collect()),
        Json::Object(m) => Mp::Map(
            m.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), json_to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Decodes one frame of MessagePack into JSON.
pub fn msgpack_to_json(frame: &[u8]) -> Result<Json> {
    let mut rest = frame;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH)
        .map_err(|e| anyhow::anyhow!("not MessagePack: {e}"))?;
    if !rest.is_empty() {
        bail!(
            "not MessagePack: {} trailing bytes after a complete value",
            rest.len()
        );
    }
    Ok(msgpack_value_to_json(&value))
}

/// Converts a MessagePack value to JSON, as the module documentation says.
pub fn msgpack_value_to_json(v: &Mp) -> Json {
    match v {
        Mp::Nil => Json::Null,
        Mp::Boolean(b) => Json::Bool(*b),
        Mp::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Json::from(u)
            } else if let Some(s) = i.as_i64() {
                Json::from(s)
            } else {
                // rmpv integers are always u64 or i64.
                Json::Null
            }
        }
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => match s.as_str() {
            Some(s) => Json::from(s),
            None => binary(s.as_bytes()),
        },
        Mp::Binary(b) => binary(b),
        Mp::Array(a) => Json::Array(a.iter().map(msgpack_value_to_json).collect()),
        Mp::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k.as_str() {
                        Some(s) => s.to_owned(),
                        None => msgpack_value_to_json(k).to_string(),
                    };
                    (key, msgpack_value_to_json(v))
                })
                .collect(),
        ),
        Mp::Ext(t, data) => serde_json::json!({ "$ext": t, "$data": BASE64.encode(data) }),
    }
}

fn float(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        None if f.is_nan() => Json::from("NaN"),
        None if f > 0.0 => Json::from("inf"),
        None => Json::from("-inf"),
    }
}

fn binary(b: &[u8]) -> Json {
    serde_json::json!({ "$binary": BASE64.encode(b) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_values_round_trip() {
        let v = json!({
            "s": "héllo", "i": -3, "u": 18446744073709551615u64, "f": 1.5,
            "a": [1, [2, [3, null]], {"k": true}], "empty": {}, "none": []
        });
        let bytes = json_text_to_msgpack(&v.to_string()).unwrap();
        assert_eq!(msgpack_to_json(&bytes).unwrap(), v);
    }

    #[test]
    fn encodes_compact_msgpack() {
        assert_eq!(json_text_to_msgpack("1").unwrap(), [0x01]);
        assert_eq!(json_text_to_msgpack("-1").unwrap(), [0xff]);
        assert_eq!(json_text_to_msgpack("\"a\"").unwrap(), [0xa1, b'a']);
        assert_eq!(json_text_to_msgpack("[]").unwrap(), [0x90]);
        assert_eq!(
            json_text_to_msgpack("{\"a\":null}").unwrap(),
            [0x81, 0xa1, b'a', 0xc0]
        );
        assert_eq!(
            json_text_to_msgpack("0.5").unwrap(),
            [0xcb, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn msgpack_only_types_have_a_json_form() {
        // bin8 [1,2], ext fixext1 type 5, map {1: "x"}, f32 NaN, non-UTF-8 str.
        assert_eq!(
            msgpack_to_json(&[0xc4, 2, 1, 2]).unwrap(),
            json!({"$binary": "AQI="})
        );
        assert_eq!(
            msgpack_to_json(&[0xd4, 5, 9]).unwrap(),
            json!({"$ext": 5, "$data": "CQ=="})
        );
        assert_eq!(
            msgpack_to_json(&[0x81, 0x01, 0xa1, b'x']).unwrap(),
            json!({"1": "x"})
        );
        assert_eq!(
            msgpack_to_json(&[0xca, 0x7f, 0xc0, 0, 0]).unwrap(),
            json!("NaN")
        );
        assert_eq!(
            msgpack_to_json(&[0xa1, 0xff]).unwrap(),
            json!({"$binary": "/w=="})
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        assert!(
            json_text_to_msgpack("{")
                .unwrap_err()
                .to_string()
                .contains("not valid JSON")
        );
        assert!(msgpack_to_json(&[]).is_err());
        let e = msgpack_to_json(&[0x01, 0x02]).unwrap_err().to_string();
        assert!(e.contains("trailing"), "{e}");
        // A str32 claiming 4 GiB, an array32 claiming 4 billion items: no huge allocation.
        assert!(msgpack_to_json(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']).is_err());
        assert!(msgpack_to_json(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        // 100 000 nested arrays: refused by depth, no stack overflow.
        assert!(msgpack_to_json(&vec![0x91; 100_000]).is_err());
        // Truncated: an array of two holding one.
        assert!(msgpack_to_json(&[0x92, 0x01]).is_err());
    }
}
