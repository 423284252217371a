//! Field selectors: parsing with Kubernetes' escaping, matching and display.

use std::collections::BTreeMap;
use std::fmt;

use super::SelectorError;

/// The comparison of a [`FieldTerm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`.
    Equals,
    /// `field!=value`.
    NotEquals,
}

/// One `field=value` or `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldTerm {
    /// The field path, such as `metadata.name` or `spec.nodeName`.
    pub field: String,
    /// The comparison.
    pub operator: FieldOperator,
    /// The value, unescaped.
    pub value: String,
}

impl FieldTerm {
    /// Whether the field's value (absent counts as the empty string, as in Kubernetes)
    /// satisfies this term.
    pub fn matches(&self, field_value: Option<&str>) -> bool {
        let equal = field_value.unwrap_or_default() == self.value;
        match self.operator {
            FieldOperator::Equals => equal,
            FieldOperator::NotEquals => !equal,
        }
    }
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operator = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{operator}{}", self.field, escape_value(&self.value))
    }
}

/// A field selector: terms that must all hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses `field=value,field!=value,...`. Empty terms are skipped; `\,`, `\=` and `\\`
    /// escape those characters in values. Nothing is trimmed, as in Kubernetes.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let error = |reason: String| SelectorError::FieldSyntax {
            selector: selector.to_owned(),
            reason,
        };
        let mut terms = Vec::new();
        for part in split_unescaped_commas(selector) {
            if part.is_empty() {
                continue;
            }
            let Some((field, operator, raw_value)) = split_term(part) else {
                return Err(error(format!(
                    "term {part:?} has no operator; expected field=value, field==value or \
                     field!=value"
                )));
            };
            if field.is_empty() {
                return Err(error(format!("term {part:?} has no field name")));
            }
            let value = unescape_value(raw_value).map_err(error)?;
            terms.push(FieldTerm {
                field: field.to_owned(),
                operator,
                value,
            });
        }
        Ok(Self { terms })
    }

    /// The terms, in the order written.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Whether this selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The fields the selector names, in the order written (repeats included).
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.field.as_str())
    }

    /// Refuses a field not in `supported` with [`SelectorError::UnsupportedField`]
    /// (`field label not supported: X`), as Kubernetes does.
    pub fn check_supported(&self, supported: &[&str]) -> Result<(), SelectorError> {
        match self.fields().find(|f| !supported.contains(f)) {
            Some(field) => Err(SelectorError::UnsupportedField {
                field: field.to_owned(),
            }),
            None => Ok(()),
        }
    }

    /// The value `field` must equal for the selector to match, if a `field=value` term pins it
    /// (for `metadata.name=N`, the server can fetch one object instead of listing).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }

    /// Whether an object is selected; `field_value` returns the object's value for a field
    /// path (`None` when absent, which compares as the empty string).
    pub fn matches(&self, field_value: impl Fn(&str) -> Option<String>) -> bool {
        self.terms
            .iter()
            .all(|t| t.matches(field_value(&t.field).as_deref()))
    }

    /// Whether an object whose selectable fields are `fields` is selected.
    pub fn matches_fields(&self, fields: &BTreeMap<String, String>) -> bool {
        self.terms
            .iter()
            .all(|t| t.matches(fields.get(&t.field).map(String::as_str)))
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{term}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Splits on commas that are not escaped by a backslash.
fn split_unescaped_commas(selector: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    parts
}

/// Splits a term at its first unescaped operator (`!=`, `==` or `=`).
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    let mut escaped = false;
    for (i, c) in term.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        let rest = &term[i..];
        if c == '\\' {
            escaped = true;
        } else if rest.starts_with("!=") {
            return Some((&term[..i], FieldOperator::NotEquals, &term[i + 2..]));
        } else if rest.starts_with("==") {
            return Some((&term[..i], FieldOperator::Equals, &term[i + 2..]));
        } else if rest.starts_with('=') {
            return Some((&term[..i], FieldOperator::Equals, &term[i + 1..]));
        }
    }
    None
}

fn unescape_value(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
            Some(other) => {
                return Err(format!(
                    "invalid escape sequence \\{other} in value {raw:?}; only \\\\, \\, and \\= \
                     are allowed"
                ))
            }
            None => return Err(format!("value {raw:?} ends with an unfinished escape '\\'")),
        }
    }
    Ok(out)
}

/// Escapes `\`, `,` and `=` in a value, the inverse of parsing.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_terms_and_operators() {
        let s = FieldSelector::parse("metadata.name=vm1,spec.nodeName!=n2,status.phase==Running")
            .unwrap();
        assert_eq!(
            s.terms(),
            [
                FieldTerm {
                    field: "metadata.name".into(),
                    operator: FieldOperator::Equals,
                    value: "vm1".into()
                },
                FieldTerm {
                    field: "spec.nodeName".into(),
                    operator: FieldOperator::NotEquals,
                    value: "n2".into()
                },
                FieldTerm {
                    field: "status.phase".into(),
                    operator: FieldOperator::Equals,
                    value: "Running".into()
                },
            ]
        );
        assert_eq!(
            s.fields().collect::<Vec<_>>(),
            ["metadata.name", "spec.nodeName", "status.phase"]
        );
        assert_eq!(s.exact_match("metadata.name"), Some("vm1"));
        assert_eq!(s.exact_match("spec.nodeName"), None);
        assert_eq!(
            s.to_string(),
            "metadata.name=vm1,spec.nodeName!=n2,status.phase=Running"
        );
    }

    #[test]
    fn empty_selector_and_empty_terms() {
        assert!(FieldSelector::parse("").unwrap().is_empty());
        assert!(FieldSelector::parse(",,").unwrap().is_empty());
        let s = FieldSelector::parse(",a=b,").unwrap();
        assert_eq!(s.terms().len(), 1);
        // Nothing is trimmed: a stray space is part of the field name, and gets refused by name.
        let s = FieldSelector::parse(" metadata.name=a").unwrap();
        assert_eq!(s.fields().collect::<Vec<_>>(), [" metadata.name"]);
        assert!(FieldSelector::parse(" ").is_err());
        assert!(FieldSelector::everything().matches(|_| None));
    }

    #[test]
    fn escapes_in_values() {
        let s = FieldSelector::parse(r"a=x\,y\=z\\w,b=2").unwrap();
        assert_eq!(s.terms()[0].value, r"x,y=z\w");
        assert_eq!(s.terms()[1].value, "2");
        assert_eq!(s.to_string(), r"a=x\,y\=z\\w,b=2");
        assert_eq!(FieldSelector::parse(&s.to_string()).unwrap(), s);

        // An empty value is allowed.
        let s = FieldSelector::parse("spec.nodeName=").unwrap();
        assert!(s.matches(|_| None));
        assert!(s.matches(|_| Some(String::new())));
        assert!(!s.matches(|_| Some("n1".into())));
    }

    #[test]
    fn bad_selectors_are_explained() {
        let err = FieldSelector::parse("metadata.name").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid field selector \"metadata.name\": term \"metadata.name\" has no operator; \
             expected field=value, field==value or field!=value"
        );
        let err = FieldSelector::parse(r"a=b\x").unwrap_err();
        assert!(
            err.to_string().contains(r"invalid escape sequence \x"),
            "{err}"
        );
        let err = FieldSelector::parse(r"a=b\").unwrap_err();
        assert!(err.to_string().contains("unfinished escape"), "{err}");
        let err = FieldSelector::parse("=b").unwrap_err();
        assert!(err.to_string().contains("no field name"), "{err}");
    }

    #[test]
    fn matching() {
        let s = FieldSelector::parse("metadata.name=vm1,spec.nodeName!=n2").unwrap();
        assert!(s.matches_fields(&fields(&[
            ("metadata.name", "vm1"),
            ("spec.nodeName", "n1")
        ])));
        assert!(s.matches_fields(&fields(&[("metadata.name", "vm1")])));
        assert!(!s.matches_fields(&fields(&[
            ("metadata.name", "vm1"),
            ("spec.nodeName", "n2")
        ])));
        assert!(!s.matches_fields(&fields(&[("metadata.name", "vm2")])));
        let lookup = |f: &str| (f == "metadata.name").then(|| "vm1".to_string());
        assert!(s.matches(lookup));
        let dynamic: &dyn Fn(&str) -> Option<String> = &lookup;
        assert!(s.matches(dynamic));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let s = FieldSelector::parse("metadata.name=a,spec.bogus=b").unwrap();
        let err = s
            .check_supported(&["metadata.name", "metadata.namespace"])
            .unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.bogus");
        assert!(s.check_supported(&["metadata.name", "spec.bogus"]).is_ok());
    }

    #[test]
    fn operator_inside_value_belongs_to_the_value() {
        let s = FieldSelector::parse("a==b=c").unwrap();
        assert_eq!(s.terms()[0].operator, FieldOperator::Equals);
        assert_eq!(s.terms()[0].value, "b=c");
        let s = FieldSelector::parse(r"a\=b=c").unwrap();
        assert_eq!(s.terms()[0].field, r"a\=b");
        assert_eq!(s.terms()[0].value, "c");
    }
}
