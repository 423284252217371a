//! Label selectors: parsing, validation, matching and display.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

use super::SelectorError;

/// What a [`Requirement`] asks of a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `k=v` or `k==v`: present and equal.
    Equals,
    /// `k!=v`: absent or different.
    NotEquals,
    /// `k in (a,b)`: present and one of the values.
    In,
    /// `k notin (a,b)`: absent or none of the values.
    NotIn,
    /// `k`: present.
    Exists,
    /// `!k`: absent.
    DoesNotExist,
    /// `k>n`: present and an integer greater than `n`.
    GreaterThan,
    /// `k<n`: present and an integer less than `n`.
    LessThan,
}

/// One condition on one label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and unique. One value for `Equals`, `NotEquals`, `GreaterThan`, `LessThan`; at
    /// least one for `In`, `NotIn`; none for `Exists`, `DoesNotExist`.
    values: BTreeSet<String>,
}

impl Requirement {
    /// Builds a requirement, validating the key, the values and their number for `operator`.
    pub fn new<I, S>(key: &str, operator: Operator, values: I) -> Result<Self, SelectorError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        validate_key(key)?;
        let values: Vec<String> = values.into_iter().map(Into::into).collect();
        let count_error = |reason: &str| SelectorError::InvalidValue {
            key: key.to_owned(),
            value: values.join(","),
            reason: reason.to_owned(),
        };
        match operator {
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(count_error(
                    "exactly one value is required for '=' and '!='",
                ))
            }
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(count_error(
                    "for 'in', 'notin' operators, values set can't be empty",
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(count_error(
                    "values set must be empty for exists and does not exist",
                ))
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(count_error("exactly one value is required for '>' and '<'"));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(SelectorError::InvalidValue {
                        key: key.to_owned(),
                        value: values[0].clone(),
                        reason: "for '>' and '<' the value must be an integer".to_owned(),
                    });
                }
            }
            _ => {}
        }
        if !matches!(operator, Operator::GreaterThan | Operator::LessThan) {
            for value in &values {
                validate_value(key, value)?;
            }
        }
        Ok(Self {
            key: key.to_owned(),
            operator,
            values: values.into_iter().collect(),
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(String::as_str)
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let label = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => label.is_some_and(|v| self.values.contains(v)),
            Operator::NotEquals | Operator::NotIn => {
                !label.is_some_and(|v| self.values.contains(v))
            }
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(label), Some(bound)) = (
                    label.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    label > bound
                } else {
                    label < bound
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or_default();
        let set = || self.values.iter().cloned().collect::<Vec<_>>().join(",");
        match self.operator {
            Operator::Equals => write!(f, "{}={first}", self.key),
            Operator::NotEquals => write!(f, "{}!={first}", self.key),
            Operator::In => write!(f, "{} in ({})", self.key, set()),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, set()),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
            Operator::GreaterThan => write!(f, "{}>{first}", self.key),
            Operator::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

/// A label selector: requirements that must all hold. Displays in the string syntax, requirements
/// sorted by key as Kubernetes prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches every object.
    pub fn everything() -> Self {
        Self::default()
    }

    /// A selector requiring each of `labels` (as a Service's `spec.selector` or a Pod's
    /// `nodeSelector` do).
    pub fn from_labels(labels: &BTreeMap<String, String>) -> Result<Self, SelectorError> {
        let requirements = labels
            .iter()
            .map(|(k, v)| Requirement::new(k, Operator::Equals, [v.as_str()]))
            .collect::<Result<_, _>>()?;
        Ok(Self::from_requirements(requirements))
    }

    /// A selector from requirements (sorted by key; the sort is stable).
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Self { requirements }
    }

    /// Parses the string syntax (see the module docs). The empty string, or only whitespace,
    /// is the selector that matches everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let tokens = lex(selector);
        let mut parser = Parser {
            selector,
            tokens,
            next: 0,
        };
        let requirements = parser.parse()?;
        Ok(Self::from_requirements(requirements))
    }

    /// Converts the object form, `{"matchLabels": {..}, "matchExpressions": [{"key", "operator",
    /// "values"}]}`. `{}` matches everything. Unknown fields are refused.
    pub fn from_k8s(selector: &Value) -> Result<Self, SelectorError> {
        let invalid = |reason: String| SelectorError::InvalidObject { reason };
        let Value::Object(object) = selector else {
            return Err(invalid(format!("expected an object, found {selector}")));
        };
        let mut requirements = Vec::new();
        for (field, value) in object {
            match field.as_str() {
                "matchLabels" => match value {
                    Value::Null => {}
                    Value::Object(labels) => {
                        for (key, value) in labels {
                            let Value::String(value) = value else {
                                return Err(invalid(format!(
                                    "matchLabels.{key} must be a string, found {value}"
                                )));
                            };
                            requirements.push(Requirement::new(key, Operator::Equals, [value])?);
                        }
                    }
                    other => {
                        return Err(invalid(format!(
                            "matchLabels must be an object, found {other}"
                        )))
                    }
                },
                "matchExpressions" => match value {
                    Value::Null => {}
                    Value::Array(expressions) => {
                        for (i, expression) in expressions.iter().enumerate() {
                            requirements.push(expression_requirement(i, expression)?);
                        }
                    }
                    other => {
                        return Err(invalid(format!(
                            "matchExpressions must be a list, found {other}"
                        )))
                    }
                },
                other => return Err(invalid(format!("unknown field {other:?}"))),
            }
        }
        Ok(Self::from_requirements(requirements))
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether this selector matches every object.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn expression_requirement(index: usize, expression: &Value) -> Result<Requirement, SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidObject {
        reason: format!("matchExpressions[{index}]: {reason}"),
    };
    let Value::Object(expression) = expression else {
        return Err(invalid(format!("expected an object, found {expression}")));
    };
    if let Some(field) = expression
        .keys()
        .find(|k| !matches!(k.as_str(), "key" | "operator" | "values"))
    {
        return Err(invalid(format!("unknown field {field:?}")));
    }
    let Some(Value::String(key)) = expression.get("key") else {
        return Err(invalid("key must be a string".to_owned()));
    };
    let operator = match expression.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        Some(other) => {
            return Err(invalid(format!(
                "operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
            )))
        }
        None => return Err(invalid("operator must be a string".to_owned())),
    };
    let values: Vec<&str> = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| invalid(format!("values must be strings, found {v}")))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(invalid(format!("values must be a list, found {other}"))),
    };
    Requirement::new(key, operator, values)
}

/// Validates a label key: an optional DNS-subdomain prefix and `/`, then a name.
pub(crate) fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: String| SelectorError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if let Err(reason) = check_dns_subdomain(prefix) {
            return Err(invalid(format!("prefix part {reason}")));
        }
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty".to_owned()));
    }
    if let Err(reason) = check_name(name) {
        return Err(invalid(format!("name part {reason}")));
    }
    Ok(())
}

/// Validates a label value: empty, or a name of at most 63 characters.
pub(crate) fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value).map_err(|reason| SelectorError::InvalidValue {
        key: key.to_owned(),
        value: value.to_owned(),
        reason,
    })
}

const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start \
                         and end with an alphanumeric character";

fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!(
            "must be no more than 63 characters ({} given)",
            name.len()
        ));
    }
    let bytes = name.as_bytes();
    let inner_ok = bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if inner_ok && ends_ok {
        Ok(())
    } else {
        Err(NAME_RULE.to_owned())
    }
}

fn check_dns_subdomain(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must be non-empty".to_owned());
    }
    if prefix.len() > 253 {
        return Err(format!(
            "must be no more than 253 characters ({} given)",
            prefix.len()
        ));
    }
    let label_ok = |label: &str| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    if prefix.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(
            "must be a lowercase RFC 1123 subdomain: lowercase alphanumeric characters, '-' or \
             '.', starting and ending with an alphanumeric character"
                .to_owned(),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Equals,
    DoubleEquals,
    NotEquals,
    Not,
    In,
    NotIn,
    OpenParen,
    CloseParen,
    Comma,
    GreaterThan,
    LessThan,
}

impl Token {
    /// The text of a token that can stand for a key or a value: identifiers, and the keywords
    /// `in` and `notin` where no operator can stand.
    fn word(&self) -> Option<String> {
        match self {
            Token::Identifier(word) => Some(word.clone()),
            Token::In => Some("in".to_owned()),
            Token::NotIn => Some("notin".to_owned()),
            _ => None,
        }
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::Identifier(s) => write!(f, "{s:?}"),
            Token::Equals => f.write_str("'='"),
            Token::DoubleEquals => f.write_str("'=='"),
            Token::NotEquals => f.write_str("'!='"),
            Token::Not => f.write_str("'!'"),
            Token::In => f.write_str("'in'"),
            Token::NotIn => f.write_str("'notin'"),
            Token::OpenParen => f.write_str("'('"),
            Token::CloseParen => f.write_str("')'"),
            Token::Comma => f.write_str("','"),
            Token::GreaterThan => f.write_str("'>'"),
            Token::LessThan => f.write_str("'<'"),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '<' | '>')
}

/// Splits a selector into tokens: identifiers are runs of anything but whitespace and
/// `=!(),<>`; `in` and `notin` are keywords.
fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let token = match c {
                '=' if chars.peek() == Some(&'=') => {
                    chars.next();
                    Token::DoubleEquals
                }
                '=' => Token::Equals,
                '!' if chars.peek() == Some(&'=') => {
                    chars.next();
                    Token::NotEquals
                }
                '!' => Token::Not,
                '(' => Token::OpenParen,
                ')' => Token::CloseParen,
                ',' => Token::Comma,
                '<' => Token::LessThan,
                _ => Token::GreaterThan,
            };
            tokens.push(token);
            continue;
        }
        let mut word = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || is_special(c) {
                break;
            }
            word.push(c);
            chars.next();
        }
        tokens.push(match word.as_str() {
            "in" => Token::In,
            "notin" => Token::NotIn,
            _ => Token::Identifier(word),
        });
    }
    tokens
}

struct Parser<'a> {
    selector: &'a str,
    tokens: Vec<Token>,
    next: usize,
}

impl Parser<'_> {
    fn error(&self, reason: String) -> SelectorError {
        SelectorError::LabelSyntax {
            selector: self.selector.to_owned(),
            reason,
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn found(token: Option<&Token>) -> String {
        match token {
            Some(token) => format!("found {token}"),
            None => "found the end of the selector".to_owned(),
        }
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        if self.tokens.is_empty() {
            return Ok(requirements);
        }
        loop {
            requirements.push(self.requirement()?);
            match self.advance() {
                None => return Ok(requirements),
                Some(Token::Comma) => {}
                Some(token) => {
                    return Err(self.error(format!(
                        "found {token} after requirement {}, expected ',' or the end",
                        requirements
                            .last()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    )))
                }
            }
        }
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        let token = self.advance();
        match token.as_ref().and_then(Token::word) {
            Some(key) => {
                validate_key(&key)?;
                Ok(key)
            }
            None => Err(self.error(format!(
                "{}, expected a label key",
                Self::found(token.as_ref())
            ))),
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if self.peek() == Some(&Token::Not) {
            self.advance();
            let key = self.key()?;
            return Requirement::new(&key, Operator::DoesNotExist, Vec::<String>::new());
        }
        let key = self.key()?;
        let operator = match self.peek() {
            None | Some(Token::Comma) => {
                return Requirement::new(&key, Operator::Exists, Vec::<String>::new())
            }
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            Some(Token::In) => Operator::In,
            Some(Token::NotIn) => Operator::NotIn,
            Some(Token::GreaterThan) => Operator::GreaterThan,
            Some(Token::LessThan) => Operator::LessThan,
            Some(token) => {
                return Err(self.error(format!(
                    "found {token} after key {key:?}, expected an operator \
                     ('=', '==', '!=', 'in', 'notin', '>', '<'), ',' or the end"
                )))
            }
        };
        self.advance();
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set(&key)?,
            _ => vec![self.single_value(&key)?],
        };
        Requirement::new(&key, operator, values)
    }

    /// The value after `=`, `!=`, `>` or `<`; nothing (end or `,`) is the empty value.
    fn single_value(&mut self, key: &str) -> Result<String, SelectorError> {
        if let Some(value) = self.peek().and_then(Token::word) {
            self.advance();
            return Ok(value);
        }
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(token) => Err(self.error(format!(
                "found {token} after the operator of key {key:?}, expected a value"
            ))),
        }
    }

    /// `( v1, v2, ... )`; an empty slot (`(a,)`, `()`) is the empty value.
    fn value_set(&mut self, key: &str) -> Result<Vec<String>, SelectorError> {
        match self.advance() {
            Some(Token::OpenParen) => {}
            other => {
                return Err(self.error(format!(
                    "{} after 'in'/'notin' for key {key:?}, expected '('",
                    Self::found(other.as_ref())
                )))
            }
        }
        let mut values = Vec::new();
        if self.peek() == Some(&Token::CloseParen) {
            // As in Kubernetes, `()` is the set holding the empty value.
            self.advance();
            return Ok(vec![String::new()]);
        }
        loop {
            match self.peek() {
                Some(token) if token.word().is_some() => {
                    values.extend(token.word());
                    self.advance();
                }
                Some(Token::Comma | Token::CloseParen) => values.push(String::new()),
                other => {
                    return Err(self.error(format!(
                        "{} in the value set of key {key:?}, expected a value",
                        Self::found(other)
                    )))
                }
            }
            match self.advance() {
                Some(Token::Comma) => {}
                Some(Token::CloseParen) => return Ok(values),
                other => {
                    return Err(self.error(format!(
                        "{} in the value set of key {key:?}, expected ',' or ')'",
                        Self::found(other.as_ref())
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
