//! QEMU's option-list syntax: `driver,key=value,key=value`, where a literal comma inside a value
//! is written as two commas.
//!
//! ```text
//!   value "a,b=c"   ──escape──▶  "a,,b=c"
//!   "virtio-blk-pci,drive=d0,serial=a,,b=c"  ──parse──▶  [(implied) "virtio-blk-pci",
//!                                                         ("drive", "d0"), ("serial", "a,b=c")]
//! ```
//!
//! Inside a value only the comma is special (QEMU's `get_opt_value` in `util/qemu-option.c`, and the
//! keyval parser behind `-blockdev`), so doubling commas is a complete escape: an escaped value can
//! never end its element early and so can never add a key of its own. [`parse`] mirrors QEMU's
//! parser (an element without `=` after the first is a flag, `foo` = `foo=on`, `nofoo` = `foo=off`)
//! so tests can check that what we emit reads back as exactly what we meant.

/// Escapes `value` for use as the value of a `key=value` element.
pub fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Builds one option list; keys are static (ours), values are escaped.
#[derive(Debug, Clone, Default)]
pub(crate) struct OptList {
    out: String,
}

impl OptList {
    /// A list whose first element is an implied value, such as `-device`'s driver name.
    pub(crate) fn implied(first: &'static str) -> Self {
        OptList {
            out: first.to_owned(),
        }
    }

    pub(crate) fn new() -> Self {
        OptList::default()
    }

    pub(crate) fn kv(mut self, key: &'static str, value: impl AsRef<str>) -> Self {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.out.push_str(key);
        self.out.push('=');
        self.out.push_str(&escape(value.as_ref()));
        self
    }

    pub(crate) fn kv_opt(self, key: &'static str, value: Option<impl AsRef<str>>) -> Self {
        match value {
            Some(v) => self.kv(key, v),
            None => self,
        }
    }

    pub(crate) fn on_off(self, key: &'static str, on: bool) -> Self {
        self.kv(key, if on { "on" } else { "off" })
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// One element of a parsed option list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptElement {
    /// `None` for the implied first element (`virtio-blk-pci` in `virtio-blk-pci,drive=d0`).
    pub key: Option<String>,
    pub value: String,
}

/// Parses an option list as QEMU's QemuOpts parser does.
pub fn parse(input: &str) -> Vec<OptElement> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut first = true;
    while pos < bytes.len() {
        let name_end = bytes[pos..]
            .iter()
            .position(|&b| b == b'=' || b == b',')
            .map_or(bytes.len(), |i| pos + i);
        if name_end < bytes.len() && bytes[name_end] == b'=' {
            let key = input[pos..name_end].to_owned();
            let (value, next) = parse_value(input, name_end + 1);
            out.push(OptElement {
                key: Some(key),
                value,
            });
            pos = next;
        } else if first {
            let (value, next) = parse_value(input, pos);
            out.push(OptElement { key: None, value });
            pos = next;
        } else {
            let name = &input[pos..name_end];
            let (key, value) = match name.strip_prefix("no") {
                Some(rest) => (rest.to_owned(), "off"),
                None => (name.to_owned(), "on"),
            };
            out.push(OptElement {
                key: Some(key),
                value: value.to_owned(),
            });
            pos = name_end;
        }
        if pos < bytes.len() {
            // Skip the single comma that ended the element.
            pos += 1;
        }
        first = false;
    }
    out
}

/// Reads a value starting at `start`: up to the first single comma, with `,,` meaning `,`.
/// Returns the value and the index of the ending comma (or the input's length).
fn parse_value(input: &str, start: usize) -> (String, usize) {
    let bytes = input.as_bytes();
    let mut value = String::new();
    let mut pos = start;
    loop {
        let comma = bytes[pos..]
            .iter()
            .position(|&b| b == b',')
            .map_or(bytes.len(), |i| pos + i);
        value.push_str(&input[pos..comma]);
        if comma + 1 < bytes.len() && bytes[comma + 1] == b',' {
            value.push(',');
            pos = comma + 2;
        } else {
            return (value, comma);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(k: &str, v: &str) -> OptElement {
        OptElement {
            key: Some(k.to_owned()),
            value: v.to_owned(),
        }
    }

    #[test]
    fn parses_like_qemu() {
        assert_eq!(
            parse("virtio-blk-pci,drive=d0,serial=a,,b=c,readonly,noshare"),
            vec![
                OptElement {
                    key: None,
                    value: "virtio-blk-pci".into()
                },
                kv("drive", "d0"),
                kv("serial", "a,b=c"),
                kv("readonly", "on"),
                kv("share", "off"),
            ]
        );
        assert_eq!(parse("a=b,,"), vec![kv("a", "b,")]);
        assert_eq!(parse("a=,b="), vec![kv("a", ""), kv("b", "")]);
        assert_eq!(parse("a=x=y"), vec![kv("a", "x=y")]);
        assert_eq!(parse(""), vec![]);
    }

    #[test]
    fn an_unescaped_comma_would_inject_a_key() {
        // The attack the escaping prevents: a serial of "x,readonly=off".
        let raw = "virtio-blk-pci,serial=x,readonly=off";
        assert!(parse(raw).contains(&kv("readonly", "off")));
        let safe = OptList::implied("virtio-blk-pci")
            .kv("serial", "x,readonly=off")
            .finish();
        assert_eq!(parse(&safe)[1], kv("serial", "x,readonly=off"));
        assert_eq!(parse(&safe).len(), 2);
    }

    proptest! {
        #[test]
        fn escaped_values_read_back_exactly(values in proptest::collection::vec(".*", 1..6)) {
            let keys = ["a", "b", "c", "d", "e", "f"];
            let mut list = OptList::implied("drv");
            for (k, v) in keys.iter().zip(&values) {
                list = list.kv(k, v);
            }
            let parsed = parse(&list.finish());
            let mut expected = vec![OptElement { key: None, value: "drv".into() }];
            expected.extend(keys.iter().zip(&values).map(|(k, v)| kv(k, v)));
            prop_assert_eq!(parsed, expected);
        }
    }
}
