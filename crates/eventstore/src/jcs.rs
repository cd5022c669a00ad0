//! RFC 8785 JSON Canonicalization Scheme for `serde_json::Value`, written straight into a
//! buffer. The general-purpose crate (a dev-dependency, the oracle of the tests below) goes
//! through serde's serializer and costs ten times more, which showed in append throughput.
//!
//! JCS: no whitespace; object members sorted by the UTF-16 code units of their names;
//! strings escape only `"`, `\` and control characters (`\b \t \n \f \r`, else `\u00xx`);
//! numbers are IEEE-754 doubles written as ECMAScript's `Number.prototype.toString`. Integers
//! beyond ±(2^53 − 1) would round, and two of them could share one form: appends refuse them
//! in event data.

use std::cmp::Ordering;

use serde_json::{Map, Value};

/// Appends the canonical form of `value` to `out`.
pub fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => {
            // Every serde_json number is finite; integers beyond 2^53 round, as JCS says.
            let double = number.as_f64().unwrap_or(0.0);
            let mut buffer = ryu_js::Buffer::new();
            out.extend_from_slice(buffer.format_finite(double).as_bytes());
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        Value::Object(members) => write_object(members, out),
    }
}

/// Compares member names by UTF-16 code units. UTF-8 byte order (the map's own) agrees
/// except between characters at or above U+E000 (lead byte 0xEE or more), where
/// supplementary characters (surrogates in UTF-16) sort before U+E000..U+FFFF.
fn compare_names(a: &str, b: &str) -> Ordering {
    let needs_utf16 = |s: &str| s.bytes().any(|byte| byte >= 0xEE);
    if needs_utf16(a) || needs_utf16(b) {
        a.encode_utf16().cmp(b.encode_utf16())
    } else {
        a.cmp(b)
    }
}

fn write_object(members: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut previous: Option<&str> = None;
    let in_order = members.keys().all(|name| {
        let ordered = previous.is_none_or(|p| compare_names(p, name) == Ordering::Less);
        previous = Some(name);
        ordered
    });
    out.push(b'{');
    let mut write_member = |i: usize, name: &str, value: &Value| {
        if i > 0 {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        write(value, out);
    };
    if in_order {
        for (i, (name, value)) in members.iter().enumerate() {
            write_member(i, name, value);
        }
    } else {
        let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
        sorted.sort_by(|a, b| compare_names(a.0, b.0));
        for (i, (name, value)) in sorted.into_iter().enumerate() {
            write_member(i, name, value);
        }
    }
    out.push(b'}');
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match byte {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x09 => Some(b"\\t"),
            0x0a => Some(b"\\n"),
            0x0c => Some(b"\\f"),
            0x0d => Some(b"\\r"),
            0x00..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i]);
        match escape {
            Some(sequence) => out.extend_from_slice(sequence),
            None => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]),
        }
        run_start = i + 1;
    }
    out.extend_from_slice(&bytes[run_start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::write;
    use serde_json::{json, Map, Number, Value};

    fn ours(value: &Value) -> String {
        let mut out = Vec::new();
        write(value, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    fn oracle(value: &Value) -> String {
        serde_json_canonicalizer::to_string(value).expect("oracle")
    }

    #[test]
    // 333333333.33333329 is RFC 8785's own example of a literal that must round.
    #[allow(clippy::excessive_precision)]
    fn matches_the_rfc_8785_examples_and_edge_cases() {
        let cases = [
            json!(null),
            json!([true, false]),
            json!({ "b": 1, "a": [1, 2, { "d": null, "c": "x" }] }),
            json!([
                0.0,
                -0.0,
                1.0,
                100.0,
                0.1,
                1e21,
                1e20,
                1e-7,
                1e-6,
                1.5e300,
                -2.5e-8,
                333333333.33333329
            ]),
            json!([
                9007199254740993u64,
                u64::MAX,
                i64::MIN,
                -1,
                4.9e-324,
                1.7976931348623157e308
            ]),
            json!({ "\u{20ac}": "Euro", "\r": "cr", "1": "one", "\u{1f600}": "smile", "\u{e000}": "private", "\u{80}": "x" }),
            json!("\u{0}\u{1}\u{8}\u{9}\u{a}\u{b}\u{c}\u{d}\u{1f}\u{7f}\u{2028}\"\\/é漢字🙂"),
            json!({ "": { "": [] }, "a\u{0}": {} }),
        ];
        for case in &cases {
            assert_eq!(ours(case), oracle(case), "for {case}");
        }
    }

    /// A small deterministic generator: no dependency, same cases every run.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 11
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn string(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "b",
                "Z",
                "0",
                " ",
                "\"",
                "\\",
                "\n",
                "\u{1}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "ü",
                "\u{20ac}",
                "\u{e000}",
                "\u{fffd}",
                "\u{ffff}",
                "\u{10000}",
                "\u{1f600}",
                "漢",
                "\u{2028}",
            ];
            (0..self.below(6))
                .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
                .collect()
        }

        fn number(&mut self) -> Value {
            match self.below(4) {
                0 => Value::from(self.next() as i64 - (1 << 52)),
                1 => Value::from(self.next() << 11),
                _ => {
                    let bits = self.next() << 11 | self.below(1 << 11);
                    let double = f64::from_bits(bits);
                    Number::from_f64(double).map_or(Value::from(0), Value::Number)
                }
            }
        }

        fn value(&mut self, depth: u32) -> Value {
            match if depth > 3 {
                self.below(4)
            } else {
                self.below(6)
            } {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => self.number(),
                3 => Value::String(self.string()),
                4 => Value::Array((0..self.below(5)).map(|_| self.value(depth + 1)).collect()),
                _ => {
                    let mut map = Map::new();
                    for _ in 0..self.below(6) {
                        map.insert(self.string(), self.value(depth + 1));
                    }
                    Value::Object(map)
                }
            }
        }
    }

    #[test]
    fn matches_the_reference_implementation_on_ten_thousand_random_documents() {
        let mut random = Lcg(0x0063_7269_6572);
        for _ in 0..10_000 {
            let value = random.value(0);
            assert_eq!(ours(&value), oracle(&value), "for {value}");
        }
    }
}
